import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { MAX_TRANSFER_LINKS } from '../../schemas/transfer-links.ts'
import { RangeController } from './controller.ts'
import { LINK_MAX_AGE_MS, LinkMemory, originOf } from './link-memory.ts'

const DAY = 24 * 60 * 60_000
const T0 = Date.UTC(2026, 10, 26, 12)

let root: string
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'dp-links-'))
})
afterEach(async () => {
  await rm(root, { recursive: true, force: true })
})

/** A real controller after one range of `bytes` that took `ms` (20 ms to its first byte). */
function learntSnapshot(bytes = 4 * 1024 * 1024, ms = 400) {
  const c = new RangeController({ blockSize: 4096 })
  c.next(0)
  c.onRangeComplete({ bytes, startedAt: 0, firstByteAt: 20, finishedAt: ms })
  c.next(ms)
  return c.snapshot()
}

const memory = (now = T0) => new LinkMemory(root, { now: () => now })
const linksPath = () => join(root, '.transfer', 'links.json')
const good = (origin: string, savedAt = T0) => ({
  origin,
  bandwidthBytesPerSec: 5e6,
  minRttMs: 40,
  parallel: 2,
  savedAt,
})
const writeLinks = async (content: unknown) => {
  await mkdir(join(root, '.transfer'), { recursive: true })
  await writeFile(linksPath(), typeof content === 'string' ? content : JSON.stringify(content))
}

describe('originOf', () => {
  it('is scheme://host:port with the port written out', () => {
    expect(originOf('https://edge.example/v1/deltas/a/1/2?v=x')).toBe('https://edge.example:443')
    expect(originOf('https://edge.example:443/other')).toBe('https://edge.example:443')
    expect(originOf('http://127.0.0.1:8787/v1')).toBe('http://127.0.0.1:8787')
    expect(originOf('http://[::1]/x')).toBe('http://[::1]:80')
    expect(originOf('ftp://edge.example/x')).toBeNull()
    expect(originOf('not a url')).toBeNull()
  })
})

describe('LinkMemory', () => {
  it("saves a controller's estimates for its origin and gives them back as the next prior", async () => {
    const snapshot = learntSnapshot()
    expect(snapshot.bandwidthBytesPerSec).toBeGreaterThan(0)
    expect(await memory().save('https://edge.example/v1/deltas/a/1.0.0/1.1.0', snapshot)).toBe(true)
    // Another path and the explicit default port: the same link.
    expect(await memory(T0 + DAY).load('https://edge.example:443/v1/deltas/b/2/3')).toEqual({
      bandwidthBytesPerSec: snapshot.bandwidthBytesPerSec,
      minRttMs: snapshot.minRttMs,
      parallel: snapshot.parallelLevel,
    })
    // Another origin (scheme, host or port) is a cold start.
    expect(await memory().load('http://edge.example/v1')).toBeUndefined()
    expect(await memory().load('https://edge.example:8443/v1')).toBeUndefined()
    expect(await memory().load('https://other.example/v1')).toBeUndefined()
    const file = JSON.parse(await readFile(linksPath(), 'utf8'))
    expect(file).toEqual({
      version: 1,
      links: [expect.objectContaining({ origin: 'https://edge.example:443' })],
    })
    // No temp or lock is left beside it.
    expect(await readdir(join(root, '.transfer'))).toEqual(['links.json'])
  })

  it("removes a killed save's temp file, and only an old one", async () => {
    await mkdir(join(root, '.transfer'))
    const killed = join(root, '.transfer', '.links.json.0123456789ab.tmp')
    const recent = join(root, '.transfer', '.links.json.ba9876543210.tmp')
    await writeFile(killed, '{"version":1,')
    await writeFile(recent, '{')
    const hourAgo = new Date(Date.now() - 60 * 60_000)
    await utimes(killed, hourAgo, hourAgo)
    expect(await memory().save('https://edge.example/x', learntSnapshot())).toBe(true)
    expect((await readdir(join(root, '.transfer'))).sort()).toEqual([
      '.links.json.ba9876543210.tmp',
      'links.json',
    ])
  })

  it('saves nothing for a controller that measured nothing yet', async () => {
    const fresh = new RangeController({ blockSize: 4096 })
    fresh.next(0)
    expect(await memory().save('https://edge.example/x', fresh.snapshot())).toBe(false)
    expect(await memory().links()).toEqual([])
  })

  it('is a cold start, never an error, for an absent, garbled or oversized file, and a save repairs it', async () => {
    expect(await memory().load('https://edge.example/x')).toBeUndefined()
    for (const bad of [
      '{"version":1,"links":[',
      '',
      '\u0000\u0001binary',
      JSON.stringify({ version: 2, links: [good('https://edge.example:443')] }),
      JSON.stringify({ links: [good('https://edge.example:443')] }),
      JSON.stringify([good('https://edge.example:443')]),
      JSON.stringify({
        version: 1,
        links: Array.from({ length: MAX_TRANSFER_LINKS + 1 }, (_, i) => good(`https://e${i}.example:443`)),
      }),
      // A valid file padded beyond 64 KiB is not read at all.
      `${JSON.stringify({ version: 1, links: [good('https://edge.example:443')] })}${' '.repeat(70_000)}`,
    ]) {
      await writeLinks(bad)
      expect(await memory().load('https://edge.example/x')).toBeUndefined()
    }
    expect(await memory().save('https://edge.example/x', learntSnapshot())).toBe(true)
    expect(await memory().load('https://edge.example/x')).toBeDefined()
    // A folder where the file should be: still no error either way.
    await rm(linksPath())
    await mkdir(linksPath())
    expect(await memory().load('https://edge.example/x')).toBeUndefined()
    expect(await memory().save('https://edge.example/x', learntSnapshot())).toBe(false)
  })

  it('drops each out-of-bounds entry and keeps the valid ones beside it', async () => {
    const bad = [
      { ...good('https://a.example:443'), bandwidthBytesPerSec: 0 },
      { ...good('https://b.example:443'), bandwidthBytesPerSec: -5 },
      { ...good('https://c.example:443'), bandwidthBytesPerSec: 1e12 },
      { ...good('https://d.example:443'), minRttMs: -1 },
      { ...good('https://e.example:443'), minRttMs: 3_600_000 },
      { ...good('https://f.example:443'), parallel: 0 },
      { ...good('https://g.example:443'), parallel: 1.5 },
      { ...good('https://h.example:443'), parallel: 10_000 },
      { ...good('https://i.example:443'), savedAt: -1 },
      { ...good('https://j.example:443'), minRttMs: '40' },
      { ...good('https://k.example:443'), bandwidthBytesPerSec: null },
      { ...good('https://l.example'), extra: 1 },
      good('ftp://m.example:21'),
      'https://n.example:443',
    ]
    // 1e400 is valid JSON that parses to Infinity: not finite, not kept.
    const infinite = { ...good('https://o.example:443'), bandwidthBytesPerSec: 123456789 }
    const text = JSON.stringify({ version: 1, links: [...bad, infinite, good('https://ok.example:443')] })
    await writeLinks(text.replace('123456789', '1e400'))
    expect((await memory().links()).map((l) => l.origin)).toEqual(['https://ok.example:443'])
    expect(await memory().load('https://ok.example/x')).toEqual({
      bandwidthBytesPerSec: 5e6,
      minRttMs: 40,
      parallel: 2,
    })
    for (const letter of 'abcdefghijklmno')
      expect(await memory().load(`https://${letter}.example/x`)).toBeUndefined()
  })

  it(`ignores a link saved more than ${LINK_MAX_AGE_MS / DAY} days ago, or too far in the future`, async () => {
    await writeLinks({
      version: 1,
      links: [
        good('https://old.example:443', T0 - LINK_MAX_AGE_MS - 1),
        good('https://week.example:443', T0 - LINK_MAX_AGE_MS + 60_000),
        good('https://ahead.example:443', T0 + 2 * 60 * 60_000),
      ],
    })
    expect(await memory().load('https://old.example/x')).toBeUndefined()
    expect(await memory().load('https://week.example/x')).toBeDefined()
    expect(await memory().load('https://ahead.example/x')).toBeUndefined()
    // A shorter maximum age is honoured, and a save drops what went stale.
    expect(
      await new LinkMemory(root, { now: () => T0, maxAgeMs: DAY }).load('https://week.example/x'),
    ).toBeUndefined()
    await memory().save('https://new.example/x', learntSnapshot())
    const kept = JSON.parse(await readFile(linksPath(), 'utf8')).links.map(
      (l: { origin: string }) => l.origin,
    )
    expect(kept).toEqual(['https://new.example:443', 'https://week.example:443'])
  })

  it(`keeps at most ${MAX_TRANSFER_LINKS} origins, the most recently saved, one entry each`, async () => {
    const total = MAX_TRANSFER_LINKS + 8
    for (let i = 0; i < total; i++)
      await memory(T0 + i * 1000).save(`https://e${i}.example/x`, learntSnapshot())
    // Saving an origin again replaces its entry (and makes it the newest).
    await memory(T0 + total * 1000).save('https://e10.example/x', learntSnapshot(1024 * 1024))
    const links = await memory(T0 + total * 1000).links()
    expect(links).toHaveLength(MAX_TRANSFER_LINKS)
    expect(links[0]?.origin).toBe('https://e10.example:443')
    expect(new Set(links.map((l) => l.origin)).size).toBe(MAX_TRANSFER_LINKS)
    const now = memory(T0 + total * 1000)
    // e0–e7 were pushed out by e32–e39; saving e10 again replaced its entry, pushing out none.
    expect(await now.load('https://e7.example/x')).toBeUndefined()
    expect(await now.load('https://e8.example/x')).toBeDefined()
    expect(await now.load(`https://e${total - 1}.example/x`)).toBeDefined()
    expect((await readFile(linksPath())).length).toBeLessThan(64 * 1024)
  })

  it('keeps every origin when saves of different origins run at once', async () => {
    const origins = Array.from({ length: 12 }, (_, i) => `https://p${i}.example/x`)
    const saved = await Promise.all(origins.map((o, i) => memory(T0 + i).save(o, learntSnapshot())))
    expect(saved.every(Boolean)).toBe(true)
    for (const o of origins) expect(await memory().load(o)).toBeDefined()
  })
})
