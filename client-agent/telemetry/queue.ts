import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import {
  type AccessEvent,
  AccessEvent as AccessEventSchema,
  MAX_TELEMETRY_EVENTS,
} from '../../schemas/telemetry.ts'
import { writeFileAtomic } from '../fs/atomic.ts'
import { makeDirs } from '../fs/make-dirs.ts'

/** Events kept while offline; beyond this the oldest are dropped, so the disk use stays bounded. */
export const MAX_QUEUED_EVENTS = 10_000

const QueueFile = z.object({
  clientId: z.string(),
  nextBatchSeq: z.number().int().nonnegative(),
  events: z.array(AccessEventSchema).max(MAX_QUEUED_EVENTS),
  dropped: z.number().int().nonnegative(),
})
type QueueFile = z.infer<typeof QueueFile>

/**
 * The agent's telemetry spool: access metadata only (artifact, version, segment name, time, count —
 * never contents), kept in one atomically rewritten file under the install root.
 */
export class TelemetryQueue {
  readonly path: string

  constructor(installRoot: string) {
    this.path = join(installRoot, '.telemetry', 'queue.json')
  }

  async load(): Promise<QueueFile> {
    try {
      const parsed = QueueFile.safeParse(JSON.parse(await readFile(this.path, 'utf8')))
      if (parsed.success) return parsed.data
    } catch {
      // Missing or unreadable: start a new spool with a new client id.
    }
    return { clientId: randomBytes(12).toString('base64url'), nextBatchSeq: 0, events: [], dropped: 0 }
  }

  async save(state: QueueFile): Promise<void> {
    await makeDirs(join(this.path, '..'))
    await writeFileAtomic(this.path, JSON.stringify(state))
  }

  async record(events: AccessEvent[]): Promise<void> {
    const state = await this.load()
    const all = [...state.events, ...events]
    const overflow = Math.max(0, all.length - MAX_QUEUED_EVENTS)
    await this.save({ ...state, events: all.slice(overflow), dropped: state.dropped + overflow })
  }

  /** The oldest events, at most one batch's worth, with the sequence number they will carry. */
  async peekBatch(): Promise<{ clientId: string; batchSeq: number; events: AccessEvent[] } | null> {
    const state = await this.load()
    if (state.events.length === 0) return null
    return {
      clientId: state.clientId,
      batchSeq: state.nextBatchSeq,
      events: state.events.slice(0, MAX_TELEMETRY_EVENTS),
    }
  }

  /** Drops a batch the edge accepted and advances the sequence (so a retry is never double-counted). */
  async acknowledge(count: number): Promise<void> {
    const state = await this.load()
    await this.save({ ...state, events: state.events.slice(count), nextBatchSeq: state.nextBatchSeq + 1 })
  }

  async clientId(): Promise<string> {
    const state = await this.load()
    if (!(await this.exists())) await this.save(state)
    return state.clientId
  }

  private async exists(): Promise<boolean> {
    try {
      await readFile(this.path)
      return true
    } catch {
      return false
    }
  }
}
