import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { RunState } from '../../../schemas/swap.ts'
import { AgentError } from '../../errors.ts'
import { RunFiles } from '../run-files.ts'

/**
 * A garbled run/state.json (the record of versions that failed a swap here) is set aside, named in one
 * warning, and the record starts empty: it was read as "nothing recorded" and overwritten by the next
 * record, the failures it held lost without a word.
 */
const dirs: string[] = []
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true })
})

async function runDir(state: string): Promise<string> {
  const dir = join(await mkdtemp(join(tmpdir(), 'run-files-')), 'run')
  dirs.push(join(dir, '..'))
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'state.json'), state)
  return dir
}

const asides = async (dir: string) => (await readdir(dir)).filter((f) => f.startsWith('state.json.corrupt-'))

describe('a garbled run/state.json', () => {
  for (const [what, text] of [
    ['torn JSON', '{"failedVersions": ["1.0.'],
    ['JSON of another shape', JSON.stringify({ failedVersions: 'not a list' })],
  ] as const) {
    it(`(${what}) is moved aside, named in one warning, and the record starts empty`, async () => {
      const dir = await runDir(text)
      const warnings: string[] = []
      const files = new RunFiles(dir, (message) => warnings.push(message))
      expect(await files.failures()).toEqual([])
      const [aside, ...more] = await asides(dir)
      expect(more).toEqual([])
      expect(aside).toMatch(/^state\.json\.corrupt-\d{4}-\d\d-\d\dT[\d-]+Z$/)
      // Kept as it was, for the operator to read.
      expect(await readFile(join(dir, aside!), 'utf8')).toBe(text)
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain(join(dir, aside!))
      // Read again: nothing garbled any more, no second warning.
      expect(await files.failedVersions()).toEqual(new Set())
      expect(warnings).toHaveLength(1)
    })
  }

  it('recording a failure over it keeps the garbled file aside and writes a valid record', async () => {
    const text = 'not json at all'
    const dir = await runDir(text)
    const warnings: string[] = []
    const files = new RunFiles(dir, (message) => warnings.push(message))
    await files.addFailed('1.2.3', 'health check failed')
    const [aside] = await asides(dir)
    expect(await readFile(join(dir, aside!), 'utf8')).toBe(text)
    expect(warnings).toEqual([expect.stringContaining(aside!)])
    const state = RunState.parse(JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')))
    expect(state.failedVersions).toEqual(['1.2.3'])
  })

  it('a valid record is read as it is, nothing moved, no warning', async () => {
    const dir = await runDir(JSON.stringify({ failedVersions: ['1.0.0'] }))
    const warnings: string[] = []
    const files = new RunFiles(dir, (message) => warnings.push(message))
    expect(await files.failures()).toEqual([{ version: '1.0.0', at: null, reason: null }])
    expect(await asides(dir)).toEqual([])
    expect(warnings).toEqual([])
  })
})

describe('a run/state.json that is there but cannot be read', () => {
  it('is an io error naming it and the way out: not an empty record, nothing moved aside or written', async () => {
    const dir = await runDir(JSON.stringify({ failedVersions: ['1.0.0'] }))
    const path = join(dir, 'state.json')
    // EACCES for a user without permission (root reads any file: a directory there stands in for it).
    const unreadable = process.getuid?.() === 0 ? 'EISDIR' : 'EACCES'
    if (unreadable === 'EISDIR') {
      await rm(path)
      await mkdir(path)
    } else await chmod(path, 0)
    const warnings: string[] = []
    const files = new RunFiles(dir, (message) => warnings.push(message))
    for (const read of [() => files.failedVersions(), () => files.failures()]) {
      const error = await read().catch((e: unknown) => e)
      expect(error).toBeInstanceOf(AgentError)
      expect(error).toMatchObject({ code: 'io', details: { path, errno: unreadable } })
      expect((error as AgentError).message).toContain(path)
      expect((error as AgentError).message).toMatch(/make it readable .* or delete it/)
    }
    // Recording a failure over it would lose the ones it holds: refused the same way.
    await expect(files.addFailed('1.2.3')).rejects.toMatchObject({ code: 'io' })
    expect(await asides(dir)).toEqual([])
    expect(warnings).toEqual([])
    if (unreadable === 'EACCES') {
      await chmod(path, 0o644)
      expect(await files.failedVersions()).toEqual(new Set(['1.0.0']))
    }
  })
})
