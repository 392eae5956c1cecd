import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { ClientId } from '../../schemas/client.ts'
import {
  type AccessEvent,
  AccessEvent as AccessEventSchema,
  MAX_TELEMETRY_EVENTS,
} from '../../schemas/telemetry.ts'
import { withArtifactLock } from '../fs/artifact-lock.ts'
import { writeFileAtomic } from '../fs/atomic.ts'
import { makeDirs } from '../fs/make-dirs.ts'

/** Events kept while offline; beyond this the oldest are dropped, so the disk use stays bounded. */
export const MAX_QUEUED_EVENTS = 10_000

const QueueFile = z.object({
  clientId: ClientId,
  nextBatchSeq: z.number().int().nonnegative(),
  events: z.array(AccessEventSchema).max(MAX_QUEUED_EVENTS),
  dropped: z.number().int().nonnegative(),
})
type QueueFile = z.infer<typeof QueueFile>

/** What is kept of a spool that does not parse as a whole (events are then checked one by one). */
const SpoolHead = z.object({
  clientId: ClientId,
  nextBatchSeq: z.number().int().nonnegative(),
  events: z.array(z.unknown()).catch([]),
  dropped: z.number().int().nonnegative().optional().catch(undefined),
})

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
    return (await this.read()).state
  }

  /**
   * The spool, and whether the file holds exactly it. A file that is not a valid spool keeps what can
   * be read of it (the client id and sequence, so an enrolled device's next batch is not taken for a
   * replay; the events that still parse); without even those it is a new spool with a new client id.
   */
  private async read(): Promise<{ state: QueueFile; stored: boolean }> {
    let json: unknown
    try {
      json = JSON.parse(await readFile(this.path, 'utf8'))
    } catch {
      return { state: newSpool(), stored: false }
    }
    const parsed = QueueFile.safeParse(json)
    if (parsed.success) return { state: parsed.data, stored: true }
    const head = SpoolHead.safeParse(json)
    const events = (head.success ? head.data.events : [])
      .flatMap((e) => {
        const event = AccessEventSchema.safeParse(e)
        return event.success ? [event.data] : []
      })
      .slice(-MAX_QUEUED_EVENTS)
    return {
      state: head.success
        ? {
            ...head.data,
            events,
            dropped: (head.data.dropped ?? 0) + head.data.events.length - events.length,
          }
        : newSpool(),
      stored: false,
    }
  }

  async save(state: QueueFile): Promise<void> {
    await makeDirs(join(this.path, '..'))
    await writeFileAtomic(this.path, JSON.stringify(state))
  }

  async record(events: AccessEvent[]): Promise<void> {
    await this.change((state) => {
      const all = [...state.events, ...events]
      const overflow = Math.max(0, all.length - MAX_QUEUED_EVENTS)
      return { ...state, events: all.slice(overflow), dropped: state.dropped + overflow }
    })
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
    await this.change((state) => ({
      ...state,
      events: state.events.slice(count),
      nextBatchSeq: state.nextBatchSeq + 1,
    }))
  }

  /**
   * Moves the next sequence number past `lastSeq`, the highest the edge has taken from this client,
   * keeping the events: a spool that went back (lost, restored from a backup) would otherwise send
   * batches the edge drops as replays until its numbers caught up. Never moves the sequence back.
   */
  async renumberAfter(lastSeq: number): Promise<void> {
    await this.change((state) =>
      state.nextBatchSeq > lastSeq ? state : { ...state, nextBatchSeq: lastSeq + 1 },
    )
  }

  /**
   * The spool's client id, written down the first time it is read (also over a spool that was not
   * valid): rollout cohorts and prefetch polls are keyed by it, so it must not change from read to read.
   */
  async clientId(): Promise<string> {
    const { state, stored } = await this.read()
    if (stored) return state.clientId
    return (await this.change((current) => current)).clientId
  }

  /**
   * Reads, changes and rewrites the spool as one step. Installs record events while the daemon's flush
   * acknowledges batches, each in its own process: interleaved, one rewrite would put back what the other
   * took out (an acknowledged batch sent again under its old sequence number, refused as a replay and
   * then acknowledged once more, dropping the events recorded meanwhile) or drop what it added.
   */
  private async change(update: (state: QueueFile) => QueueFile): Promise<QueueFile> {
    return withArtifactLock(
      join(this.path, '..'),
      {
        timeoutMs: SPOOL_LOCK_WAIT_MS,
        busyMessage: (holder) => `another deltaport process holds the telemetry spool: ${holder}`,
      },
      async () => {
        const next = update(await this.load())
        await this.save(next)
        return next
      },
    )
  }
}

/** A spool change takes milliseconds; a holder this slow is stuck, and the caller's event can wait. */
const SPOOL_LOCK_WAIT_MS = 10_000

function newSpool(): QueueFile {
  return { clientId: randomBytes(12).toString('base64url'), nextBatchSeq: 0, events: [], dropped: 0 }
}
