import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative } from 'node:path'
import { describe, expect, it } from 'vitest'

/**
 * The READMEs and docs point readers at test files ("Tested in swap-live-write-hangup.test.ts") and at
 * each other by relative links. A test renamed or a doc moved leaves such a pointer to nothing; this
 * finds them.
 */

const ROOT = join(import.meta.dirname, '..', '..')
const SKIP = new Set(['node_modules', '.git', '.wrangler', 'dist', 'coverage'])

async function repositoryFiles(dir = ROOT): Promise<string[]> {
  const files: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (SKIP.has(entry.name)) continue
    const path = join(dir, entry.name)
    if (entry.isDirectory()) files.push(...(await repositoryFiles(path)))
    else files.push(relative(ROOT, path))
  }
  return files
}

function documents(files: string[]): string[] {
  return files.filter(
    (file) =>
      file === 'README.md' ||
      file === 'client-agent/README.md' ||
      (file.startsWith('docs/') && file.endsWith('.md')),
  )
}

describe('documentation references', () => {
  it('names only test files that exist', async () => {
    const files = await repositoryFiles()
    const missing: string[] = []
    for (const doc of documents(files)) {
      const text = await readFile(join(ROOT, doc), 'utf8')
      for (const [ref = ''] of text.matchAll(/[A-Za-z0-9_.\-/]*[A-Za-z0-9_-]\.test\.ts/g)) {
        // A path names that file (from the root, or its tail); a bare name any file of that name.
        const found = files.some((file) => file === ref || file.endsWith(`/${ref.replace(/^\//, '')}`))
        if (!found) missing.push(`${doc}: ${ref}`)
      }
    }
    expect(missing).toEqual([])
  })

  it('links only to files that exist', async () => {
    const files = new Set(await repositoryFiles())
    const broken: string[] = []
    for (const doc of documents([...files])) {
      const text = await readFile(join(ROOT, doc), 'utf8')
      for (const [, target = ''] of text.matchAll(/\]\(([^)\s#]+)(?:#[^)]*)?\)/g)) {
        if (/^[a-z]+:/.test(target)) continue
        const path = relative(ROOT, join(ROOT, dirname(doc), target))
        if (!files.has(path) && ![...files].some((file) => file.startsWith(`${path}/`)))
          broken.push(`${doc}: ${target}`)
      }
    }
    expect(broken).toEqual([])
  })
})
