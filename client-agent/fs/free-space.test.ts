import { mkdtemp, statfs, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { AgentError } from '../errors.ts'
import { ensureFreeSpace, freeBytes, sizeIfPresent } from './free-space.ts'

describe('free space', () => {
  it("is the filesystem's available bytes, asked through the nearest existing folder", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-free-'))
    const fs = await statfs(dir)
    const free = await freeBytes(dir)
    expect(free).toBeGreaterThan(0)
    // Other processes write meanwhile: the same filesystem, within a few MiB.
    expect(Math.abs(free - fs.bavail * fs.bsize)).toBeLessThan(64 * 1024 ** 2)
    const notYet = await freeBytes(join(dir, 'store', 'app', 'versions'))
    expect(Math.abs(notYet - free)).toBeLessThan(64 * 1024 ** 2)
  })

  it('refuses a write that would leave less than the floor free, naming the numbers', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-free-'))
    await ensureFreeSpace(dir, 1, 0, 'a tiny write')
    const free = await freeBytes(dir)
    const refused = await ensureFreeSpace(dir, 1024, free + 1024 ** 3, 'installing app@2.0.0').catch(
      (error: unknown) => error,
    )
    expect(refused).toBeInstanceOf(AgentError)
    expect(refused).toMatchObject({ code: 'no-space', exitCode: 13 })
    expect((refused as AgentError).message).toMatch(
      /installing app@2\.0\.0 needs 1\.0 KiB .* but only .* are free/,
    )
  })

  it('counts a partial download that is already there', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-free-'))
    expect(await sizeIfPresent(join(dir, 'v.part'))).toBe(0)
    await writeFile(join(dir, 'v.part'), Buffer.alloc(1234))
    expect(await sizeIfPresent(join(dir, 'v.part'))).toBe(1234)
  })
})
