import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import type { SignedManifest } from '../../schemas/manifest.ts'
import { StagingArea } from '../daemon/staging.ts'
import { hashFile } from '../download.ts'
import { tempPathFor } from '../fs/atomic.ts'
import { generateKeyPair, type KeyPairFiles, signManifest } from '../signing.ts'
import { manifestFor, writeArtifact } from './fixtures.ts'

let dir = ''
let key: KeyPairFiles

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-staging-lru-'))
  key = await generateKeyPair()
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function envelopeFor(
  name: string,
  version: string,
  bytes: Buffer,
  file: string,
): Promise<SignedManifest> {
  return signManifest(
    manifestFor({ name, version, size: bytes.length, sha256: await hashFile(file), serial: 1 }),
    key,
  )
}

/** Stages `name@version` (100 bytes) through put(), as the daemon does, at wall-clock time `now`. */
async function stage(staging: StagingArea, name: string, version: string, now: number): Promise<void> {
  const art = await writeArtifact(dir, `${name.replace('/', '_')}-${version}.bin`, 100)
  const envelope = await envelopeFor(name, version, art.bytes, art.path)
  const blob = tempPathFor(join(dir, 'blob'))
  await writeFile(blob, art.bytes)
  await staging.put(blob, envelope, now)
}

/**
 * `count` staged items written straight into the area's folders (blob + signed manifest, as a put()
 * that a kill stopped before its index write leaves them): thousands of put() calls would each rewrite
 * the whole index. Blob times a day ahead of the clock, so by file time they are the newest.
 */
async function fillOnDisk(staging: StagingArea, count: number): Promise<{ name: string; version: string }[]> {
  const bytes = Buffer.alloc(10, 7)
  const file = join(dir, 'filler.bin')
  await writeFile(file, bytes)
  const ahead = new Date(Date.now() + 86_400_000)
  const sha256 = await hashFile(file)
  const items = Array.from({ length: count }, (_, i) => ({
    name: `filler${String(i).padStart(5, '0')}`,
    version: '1.0.0',
  }))
  // A hundred at a time: signing and writing thousands one after the other takes long.
  for (let at = 0; at < count; at += 100) {
    await Promise.all(
      items.slice(at, at + 100).map(async ({ name, version }) => {
        const item = staging.itemDir(name, version)
        await mkdir(item, { recursive: true })
        await writeFile(join(item, 'blob'), bytes)
        const manifest = manifestFor({ name, version, size: bytes.length, sha256, serial: 1 })
        await writeFile(join(item, 'manifest.json'), JSON.stringify(await signManifest(manifest, key)))
        await utimes(join(item, 'blob'), ahead, ahead)
      }),
    )
  }
  return items
}

const ids = (entries: { name: string; version: string }[]) => entries.map((e) => `${e.name}@${e.version}`)

describe('staging LRU', () => {
  it('keeps the access order with more than 4096 staged items (the index has no such cap)', async () => {
    const staging = new StagingArea(join(dir, 'many'))
    await staging.prepare()
    await stage(staging, 'keep', '1.0.0', 1000)
    await stage(staging, 'old', '1.0.0', 2000)
    const fillers = await fillOnDisk(staging, 5000)
    await staging.touch(fillers, 3000)
    // The edge asked for `keep` again: it is now the most recently used of 5002 items.
    await staging.touch([{ name: 'keep', version: '1.0.0' }], 4000)

    const listed = await staging.list()
    expect(listed).toHaveLength(5002)
    expect(ids(listed.slice(0, 1))).toEqual(['old@1.0.0'])
    expect(ids(listed.slice(-1))).toEqual(['keep@1.0.0'])
    const index = JSON.parse(await readFile(join(staging.root, 'index.json'), 'utf8'))
    expect(index.items).toHaveLength(5002)

    const total = listed.reduce((sum, e) => sum + e.size, 0)
    const first = await staging.evictTo(total - 1)
    expect(ids(first.evicted)).toEqual(['old@1.0.0'])
    // Then the fillers, touched before `keep` was: it stays the most recently used.
    const second = await staging.evictTo(total - 100 - 3 * 10)
    expect(ids(second.evicted)).toEqual(ids(fillers.slice(0, 3)))
    expect(ids((await staging.list()).slice(-1))).toEqual(['keep@1.0.0'])
  }, 300_000)

  it('evicts down to the item cap, least recently used first, whatever the bytes', async () => {
    const staging = new StagingArea(join(dir, 'capped'))
    await staging.prepare()
    const fillers = await fillOnDisk(staging, 30)
    await staging.touch(fillers.slice(20), 1000)
    await staging.touch(fillers.slice(10, 20), 2000)
    const { evicted } = await staging.evictTo(Number.MAX_SAFE_INTEGER, new Set(), 10)
    expect(evicted).toHaveLength(20)
    // The untouched first ten and the ten touched first go; the ten touched last stay.
    expect(ids(await staging.list())).toEqual(ids(fillers.slice(10, 20)))
  })

  it('orders eviction by access, not by a wall clock stepped back and forward', async () => {
    const staging = new StagingArea(join(dir, 'clock'))
    await staging.prepare()
    await stage(staging, 'x', '1.0.0', 10_000_000)
    // NTP stepped the clock back, then far forward (a dead RTC battery set right).
    await stage(staging, 'y', '1.0.0', 5_000)
    await stage(staging, 'z', '1.0.0', 9_000_000_000_000)
    // x asked for again, with the clock stepped back once more.
    await staging.touch([{ name: 'x', version: '1.0.0' }], 1)
    expect(ids(await staging.list())).toEqual(['y@1.0.0', 'z@1.0.0', 'x@1.0.0'])
    const { evicted } = await staging.evictTo(200)
    expect(ids(evicted)).toEqual(['y@1.0.0'])
  })

  it('without its index, orders items by the access their put recorded, not by file times', async () => {
    const staging = new StagingArea(join(dir, 'no-index'))
    await staging.prepare()
    // Staged in an order that is neither the names' nor the file times'.
    for (const [i, name] of ['b', 'c', 'a'].entries()) await stage(staging, name, '1.0.0', 1000 + i)
    // File times say the opposite of the staging order (a clock stepped back between the puts).
    for (const [i, name] of ['a', 'c', 'b'].entries()) {
      const at = new Date(1_000_000_000_000 + i * 60_000)
      await utimes(staging.blobPath(name, '1.0.0'), at, at)
    }
    await rm(join(staging.root, 'index.json'))
    expect(ids(await staging.list())).toEqual(['b@1.0.0', 'c@1.0.0', 'a@1.0.0'])
    // The next access number follows the highest recorded one: a new put is the most recent.
    await stage(staging, 'd', '1.0.0', 1)
    expect(ids(await staging.list())).toEqual(['b@1.0.0', 'c@1.0.0', 'a@1.0.0', 'd@1.0.0'])
  })

  it('reads an index written before access numbers in its lastAccess order', async () => {
    const staging = new StagingArea(join(dir, 'legacy'))
    await staging.prepare()
    for (const name of ['p', 'q', 'r']) await stage(staging, name, '1.0.0', 1000)
    const index = JSON.parse(await readFile(join(staging.root, 'index.json'), 'utf8'))
    const lastAccess: Record<string, number> = { p: 30, q: 10, r: 20 }
    const legacy = index.items.map(({ access: _, ...e }: { name: string; access: number }) => ({
      ...e,
      lastAccess: lastAccess[e.name],
    }))
    await writeFile(join(staging.root, 'index.json'), JSON.stringify({ items: legacy }))
    expect(ids(await staging.list())).toEqual(['q@1.0.0', 'r@1.0.0', 'p@1.0.0'])
  })
})

describe('staging lookups within a cycle', () => {
  it('answers find() from one listing after refresh(), and not for an item gone since', async () => {
    const staging = new StagingArea(join(dir, 'find'))
    await staging.prepare()
    await stage(staging, 'f', '1.0.0', 1000)
    await stage(staging, 'g', '1.0.0', 1000)
    await stage(staging, 'h', '1.0.0', 1000)
    const listings = vi.spyOn(StagingArea.prototype, 'list')
    try {
      await staging.refresh()
      for (let i = 0; i < 20; i++) expect(await staging.find('f', '1.0.0')).toMatchObject({ name: 'f' })
      expect(await staging.find('nothing', '1.0.0')).toBeUndefined()
      // Another process (an install taking it, an uninstall) removes g meanwhile.
      await new StagingArea(join(dir, 'find')).remove('g', '1.0.0')
      expect(await staging.find('g', '1.0.0')).toBeUndefined()
      // An install renames the blob out before it removes the folder: gone already then.
      await rm(staging.blobPath('h', '1.0.0'))
      expect(await staging.find('h', '1.0.0')).toBeUndefined()
      // What this process puts in meanwhile is found.
      await stage(staging, 'i', '1.0.0', 1000)
      expect(await staging.find('i', '1.0.0')).toMatchObject({ name: 'i' })
      // refresh() and the other process's remove() listed; no find() did.
      expect(listings).toHaveBeenCalledTimes(1)
    } finally {
      listings.mockRestore()
    }
  })
})
