import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { EXIT_CODES } from '../errors.ts'

const ROOT = join(import.meta.dirname, '..', '..')

/**
 * The "Exit codes: 0 ok, 1 …, 70 bug." paragraph of a README as (status, text) pairs, each entry's text
 * running up to the next entry. An entry starts the paragraph or follows a comma; a number inside an
 * entry's parenthesis ("(exit 9 …)") follows no comma and is not taken for one.
 */
async function exitCodeParagraph(readme: string): Promise<{ status: number; text: string }[]> {
  const text = await readFile(join(ROOT, readme), 'utf8')
  const paragraph = /^Exit codes: [\s\S]*?70 bug\./m.exec(text)?.[0] ?? ''
  const starts = [...paragraph.matchAll(/(?:^Exit codes: |,\s+)(\d+) (?=[a-z(`])/g)]
  return starts.map((match, i) => ({
    status: Number(match[1]),
    text: paragraph.slice((match.index ?? 0) + match[0].length, starts[i + 1]?.index ?? paragraph.length),
  }))
}

/** Both READMEs: the repository's and the npm package's (client-agent/README.md, shipped with the agent). */
const READMES = ['README.md', 'client-agent/README.md']

describe('exit codes', () => {
  it('every failure code exits non-zero, each with a status of its own', () => {
    // An AgentError is thrown for something the command did not do: exit 0 would tell a script
    // (`deltaport update app && restart app`) that it did. What went fine is a result, not an error.
    for (const [code, status] of Object.entries(EXIT_CODES)) expect(status, code).toBeGreaterThan(0)
    const statuses = Object.values(EXIT_CODES)
    expect(new Set(statuses).size).toBe(statuses.length)
  })

  it.each(READMES)('%s lists each one, under its own name, and no other', async (readme) => {
    const entries = await exitCodeParagraph(readme)
    // 0 ok and 70 bug are not AgentError codes (run() returns them itself); anything else listed must be
    // one, or scripts would match on a status the agent never exits with.
    expect(entries.map((e) => e.status)).toEqual([0, ...Object.values(EXIT_CODES), 70].sort((a, b) => a - b))
    for (const [code, status] of Object.entries(EXIT_CODES)) {
      const entry = entries.find((e) => e.status === status)
      // The words `--json` prints (`limit-exceeded` as "limit exceeded"), or the code itself quoted.
      const named =
        entry?.text.startsWith(code.replaceAll('-', ' ')) === true || entry?.text.includes(`\`${code}\``)
      expect(named, `${status} should read "${code}": ${entry?.text}`).toBe(true)
    }
  })
})
