import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

/**
 * docs/architecture.md says "where the code and this page disagree, fix this page": the parts of it that
 * are lists of what exists (decisions, Durable Objects, R2 key prefixes) are held to the repository here.
 */

const ROOT = join(import.meta.dirname, '..', '..')
const page = () => readFile(join(ROOT, 'docs', 'architecture.md'), 'utf8')

describe('docs/architecture.md', () => {
  it('names every decision record in its Decisions section', async () => {
    const decisions = (await page()).split('\n## Decisions\n')[1] ?? ''
    const numbers = (await readdir(join(ROOT, 'docs', 'decisions')))
      .map((file) => /^(\d{4})-.*\.md$/.exec(file)?.[1])
      .filter((n): n is string => n !== undefined)
    expect(numbers.length).toBeGreaterThan(0)
    expect(numbers.filter((n) => !decisions.includes(`(${n})`) && !decisions.includes(`${n})`))).toEqual([])
  })

  it('lists every Durable Object class in the durable-objects row', async () => {
    const row = (await page()).split('\n').find((line) => line.startsWith('| `durable-objects/` |')) ?? ''
    const folder = join(ROOT, 'durable-objects')
    const classes: string[] = []
    for (const file of await readdir(folder)) {
      if (!file.endsWith('.ts')) continue
      const source = await readFile(join(folder, file), 'utf8')
      for (const [, name = ''] of source.matchAll(/export class (\w+) extends DurableObject\b/g))
        classes.push(name)
    }
    expect(classes.length).toBeGreaterThan(0)
    expect(classes.filter((name) => !row.includes(name))).toEqual([])
  })

  it('shows each top-level R2 key prefix the edge writes in its Storage layout', async () => {
    const storage = /## Storage \(R2\)\n\n```\n([\s\S]*?)```/.exec(await page())?.[1] ?? ''
    const documented = new Set(
      storage
        .split('\n')
        .map((line) => line.split('/')[0])
        .filter(Boolean),
    )
    // The key builders: workers/storage/keys.ts and the publish path's own (blob slots, lazy deltas).
    const sources = [
      'workers/storage/keys.ts',
      'workers/publish/blob-slot.ts',
      'workers/publish/lazy-delta.ts',
    ]
    const prefixes = new Set<string>()
    for (const file of sources) {
      const source = await readFile(join(ROOT, file), 'utf8')
      for (const [, prefix = ''] of source.matchAll(/`([a-z-]+)\/\$\{/g)) prefixes.add(prefix)
    }
    expect(prefixes.size).toBeGreaterThan(0)
    expect([...prefixes].filter((prefix) => !documented.has(prefix))).toEqual([])
  })
})
