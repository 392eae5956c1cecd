import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Command } from 'commander'
import { describe, expect, it } from 'vitest'
import { buildProgram } from '../cli.ts'

/**
 * README's "The `deltaport` CLI" table against the commands and options commander defines: a command or
 * option added, renamed or dropped in the code without the table following fails here.
 */

const README = join(import.meta.dirname, '..', '..', 'README.md')

/** Every leaf command as its words (`devices code create`) → its long options. */
function definedCommands(): Map<string, Set<string>> {
  const commands = new Map<string, Set<string>>()
  const walk = (command: Command, words: string[]) => {
    const children = command.commands as Command[]
    if (children.length === 0)
      commands.set(words.join(' '), new Set(command.options.map((o) => o.long ?? o.short ?? '')))
    for (const child of children) walk(child, [...words, child.name()])
  }
  walk(buildProgram(), [])
  return commands
}

/** The command table's rows: each backticked usage in a first cell, as command words → options shown. */
async function documentedCommands(): Promise<Map<string, Set<string>>> {
  const text = await readFile(README, 'utf8')
  const table = /^\| command \| what \|\n\|---\|---\|\n((?:\|.*\n)+)/m.exec(text)?.[1] ?? ''
  expect(table, 'the command table').not.toBe('')
  const commands = new Map<string, Set<string>>()
  for (const row of table.trimEnd().split('\n')) {
    // The first cell ends at the first `|` that is not escaped (`pause\|abort` stays in it).
    const firstCell = /^\|((?:[^|\\]|\\.)*)\|/.exec(row)?.[1] ?? ''
    for (const [, usage = ''] of firstCell.matchAll(/`([^`]+)`/g)) {
      const tokens = usage.trim().split(/\s+/)
      const words: string[][] = []
      for (const token of tokens) {
        if (!/^[a-z]+(?:\\\|[a-z]+)*$/.test(token)) break
        words.push(token.split('\\|'))
      }
      // `--key f` on several commands: a note on options that their own rows show too.
      if (words.length === 0) continue
      const options = [...usage.matchAll(/--[a-z][a-z0-9-]*/g)].map((m) => m[0])
      for (const name of expand(words)) {
        const known = commands.get(name) ?? new Set<string>()
        for (const option of options) known.add(option)
        commands.set(name, known)
      }
    }
  }
  return commands
}

/** `rollout pause\|abort` → `rollout pause`, `rollout abort`. */
function expand(words: string[][]): string[] {
  return words.reduce<string[]>(
    (names, alternatives) => names.flatMap((name) => alternatives.map((w) => (name ? `${name} ${w}` : w))),
    [''],
  )
}

describe('README command table', () => {
  it('lists every command the CLI defines, and none it does not', async () => {
    const defined = [...definedCommands().keys()].sort()
    const documented = [...(await documentedCommands()).keys()].sort()
    expect(documented).toEqual(defined)
  })

  it("shows each command's options with the CLI's spelling, and none it does not take", async () => {
    const documented = await documentedCommands()
    const shown = (name: string) => [...(documented.get(name) ?? [])].sort()
    const defined = [...definedCommands()].map(([name, options]) => [name, [...options].sort()])
    expect(defined.map(([name]) => [name, shown(String(name))])).toEqual(defined)
  })

  it('names the global options above the table', async () => {
    const text = await readFile(README, 'utf8')
    const intro = /^Run it as [\s\S]*?\n\n/m.exec(text)?.[0] ?? ''
    for (const option of buildProgram().options) expect(intro, option.long).toContain(`\`${option.long}`)
  })
})
