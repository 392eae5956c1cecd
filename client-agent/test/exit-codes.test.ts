import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { EXIT_CODES } from '../errors.ts'

describe('exit codes', () => {
  it('every failure code exits non-zero, each with a status of its own', () => {
    // An AgentError is thrown for something the command did not do: exit 0 would tell a script
    // (`deltaport update app && restart app`) that it did. What went fine is a result, not an error.
    for (const [code, status] of Object.entries(EXIT_CODES)) expect(status, code).toBeGreaterThan(0)
    const statuses = Object.values(EXIT_CODES)
    expect(new Set(statuses).size).toBe(statuses.length)
  })

  it('README lists each one', async () => {
    const readme = await readFile(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8')
    const paragraph = /^Exit codes: [\s\S]*?70 bug\.$/m.exec(readme)?.[0] ?? ''
    expect(paragraph).not.toBe('')
    for (const [code, status] of Object.entries(EXIT_CODES))
      expect(paragraph, `${code} (${status})`).toMatch(new RegExp(`(^|[\\s,:])${status} [a-z]`))
  })
})
