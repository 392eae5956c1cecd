import { constants } from 'node:fs'
import { open, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import {
  MAX_TRANSFER_LINKS,
  TransferLink,
  TransferLinksFile,
  TransferOrigin,
} from '../../schemas/transfer-links.ts'
import { withArtifactLock } from '../fs/artifact-lock.ts'
import { isTempOf, removeStaleTemps, writeFileAtomic } from '../fs/atomic.ts'
import type { ControllerPrior, ControllerSnapshot } from './controller.ts'

/** A link measured longer ago than this is a cold start: radio, routes and the device's place change. */
export const LINK_MAX_AGE_MS = 7 * 24 * 60 * 60_000
/** A saved time this far ahead of the clock (the clock was stepped back since) is of unknown age. */
const FUTURE_TOLERANCE_MS = 60 * 60_000
/** 32 entries take about 5 KB; a file far beyond that is not ours, and is not read into memory. */
const MAX_FILE_BYTES = 64 * 1024
/** A temp of links.json this old is a killed save's (a live one renames it within milliseconds). */
const STALE_TEMP_MS = 60_000
/** A save takes milliseconds; a holder slower than this is stuck, and this save is skipped, not waited for. */
const LOCK_WAIT_MS = 2_000

/**
 * `scheme://host:port` of a URL, the port always written out (so `https://edge` and `https://edge:443`
 * are one link); null for what is not an http(s) URL.
 */
export function originOf(url: string): string | null {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return null
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null
  const port = parsed.port || (parsed.protocol === 'https:' ? '443' : '80')
  const origin = `${parsed.protocol}//${parsed.hostname}:${port}`
  return TransferOrigin.safeParse(origin).success ? origin : null
}

/** The part of a controller's snapshot a warm start takes; none without both estimates. */
export function priorOf(snapshot: ControllerSnapshot): ControllerPrior | undefined {
  const { bandwidthBytesPerSec, minRttMs, parallelLevel } = snapshot
  if (bandwidthBytesPerSec === null || minRttMs === null) return undefined
  return { bandwidthBytesPerSec, minRttMs, parallel: parallelLevel }
}

export interface LinkMemoryOptions {
  maxAgeMs?: number
  /** The wall clock, ms since the epoch (tests move it). */
  now?: () => number
}

/**
 * What the range controller learnt of each edge origin's link, kept between transfers (and between
 * agent processes) in `<installRoot>/.transfer/links.json`, so the next transfer to that origin starts
 * from it (`prior`, a warm start: ADR 0007) instead of probing up from the smallest range.
 *
 * Best effort both ways: a file that is missing, unreadable, garbled or too big, an entry out of bounds,
 * of another origin or older than `maxAgeMs` is a cold start, and a save that fails (a full disk, the lock
 * held by a stuck process) is skipped; neither ever fails a transfer. Saves read, change and rewrite the
 * file under the `.transfer` folder's lock (fs/artifact-lock.ts), and write it whole (writeFileAtomic), so
 * two updates of different artifacts that finish together keep both their origins and no reader ever
 * sees a torn file.
 */
export class LinkMemory {
  readonly path: string
  readonly #dir: string
  readonly #maxAgeMs: number
  readonly #now: () => number

  constructor(installRoot: string, options: LinkMemoryOptions = {}) {
    this.#dir = join(installRoot, '.transfer')
    this.path = join(this.#dir, 'links.json')
    this.#maxAgeMs = options.maxAgeMs ?? LINK_MAX_AGE_MS
    this.#now = options.now ?? Date.now
  }

  /** The prior for a transfer from `url`: the saved link of its origin, if one is fresh and valid. */
  async load(url: string): Promise<ControllerPrior | undefined> {
    const origin = originOf(url)
    if (origin === null) return undefined
    const link = (await this.links()).find((l) => l.origin === origin)
    if (!link) return undefined
    return {
      bandwidthBytesPerSec: link.bandwidthBytesPerSec,
      minRttMs: link.minRttMs,
      parallel: link.parallel,
    }
  }

  /**
   * Remembers what `snapshot` learnt of `url`'s origin (it replaces that origin's entry), keeping the
   * MAX_TRANSFER_LINKS most recently saved fresh entries. Returns whether the file was written: a
   * snapshot without both estimates (no range completed), or out of the file's bounds, is not saved.
   */
  async save(url: string, snapshot: ControllerSnapshot): Promise<boolean> {
    const origin = originOf(url)
    if (origin === null) return false
    const prior = priorOf(snapshot)
    if (prior === undefined) return false
    const entry = TransferLink.safeParse({ origin, ...prior, savedAt: Math.round(this.#now()) })
    if (!entry.success) return false
    try {
      await withArtifactLock(this.#dir, { timeoutMs: LOCK_WAIT_MS }, async () => {
        const others = (await this.links()).filter((l) => l.origin !== origin)
        const links = [entry.data, ...others]
          .sort((a, b) => b.savedAt - a.savedAt)
          .slice(0, MAX_TRANSFER_LINKS)
        await writeFileAtomic(this.path, `${JSON.stringify({ version: 1, links })}\n`)
        // A save killed before its rename left its temp; under the lock no live save has one but this.
        const temps = (await readdir(this.#dir).catch(() => []))
          .filter((entry) => isTempOf(entry, (base) => base === 'links.json'))
          .map((entry) => join(this.#dir, entry))
        await removeStaleTemps(temps, Date.now() - STALE_TEMP_MS)
      })
      return true
    } catch {
      return false
    }
  }

  /** The fresh, valid entries of the file, one per origin (the newest), newest first; none when unreadable. */
  async links(): Promise<TransferLink[]> {
    const text = await readBounded(this.path)
    if (text === null) return []
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      return []
    }
    const file = TransferLinksFile.safeParse(json)
    if (!file.success) return []
    const now = this.#now()
    const byOrigin = new Map<string, TransferLink>()
    for (const raw of file.data.links) {
      const link = TransferLink.safeParse(raw)
      if (!link.success) continue
      const age = now - link.data.savedAt
      if (age > this.#maxAgeMs || age < -FUTURE_TOLERANCE_MS) continue
      const known = byOrigin.get(link.data.origin)
      if (!known || known.savedAt < link.data.savedAt) byOrigin.set(link.data.origin, link.data)
    }
    return [...byOrigin.values()].sort((a, b) => b.savedAt - a.savedAt)
  }
}

/** The file's text, or null when it is missing, unreadable, not a file or above MAX_FILE_BYTES. */
async function readBounded(path: string): Promise<string | null> {
  // Non-blocking: a FIFO put in its place must not hold the update waiting for a writer.
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK).catch(() => null)
  if (handle === null) return null
  try {
    const info = await handle.stat()
    if (!info.isFile() || info.size > MAX_FILE_BYTES) return null
    const buffer = Buffer.alloc(MAX_FILE_BYTES + 1)
    let length = 0
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length)
      if (bytesRead === 0) break
      length += bytesRead
      // Grew past the bound since the stat: not a file of ours.
      if (length > MAX_FILE_BYTES) return null
    }
    return buffer.toString('utf8', 0, length)
  } catch {
    return null
  } finally {
    await handle.close().catch(() => undefined)
  }
}
