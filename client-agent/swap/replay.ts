import type { HeldWrite, WriteBuffer } from './buffer.ts'
import { ReplayTimedOut, sendBuffered } from './forward.ts'
import { pickClient } from './priority.ts'
import { serviceDidNotAnswer } from './problem-answer.ts'
import type { ServiceProcess } from './service-process.ts'

export type ReplayResult =
  | { ok: true; replayed: number }
  | { ok: false; replayed: number; error: string; failedWrite: number }

export interface ReplayOptions {
  concurrency: number
  /** Current priority of each client; called whenever a lane picks the next write. */
  priority: (clients: readonly string[]) => ReadonlyMap<string, number>
  /** While true the loop waits for new writes even when the buffer is empty (the probation window). */
  keepGoing: () => boolean
  /**
   * How long `target` may send nothing while it has a write (a socket-idle bound). A new version on
   * probation that takes longer has failed (`replayTimeoutMs`); the version that serves gets a live
   * request's `serviceAnswerTimeoutMs` and, with `onNoAnswer`, such a write is given up on, never sent
   * again (sent again after a timeout, a slow write was applied over and over). Null: no bound.
   */
  timeoutMs: number | null
  /**
   * Set for the version that serves: a write it sends nothing for `timeoutMs` is given up on, not failed.
   * Its client gets 504 (problem+json: it may have been applied), the write is settled (`done` record
   * first, so nothing replays it again into the hung service), its connection is closed, and the lane goes
   * on with the other held writes. Called once such a write is settled. Without it, a timeout fails the
   * replay (a new version on probation: the write goes to the previous version).
   */
  onNoAnswer?: (entry: HeldWrite, ms: number) => void
  /** Gives up the writes in flight (they stay held): the agent is stopping and their time is up. */
  cutoff?: AbortSignal
  /**
   * Once aborted, no lane takes another write (the agent is stopping): the loop ends when the writes
   * already in flight are answered or cut off, and whatever was not sent stays held.
   */
  halt?: AbortSignal
  /**
   * Whether `target`'s 5xx to `entry` is that write's answer (settled and sent to its client) rather
   * than a failure that keeps it held. Never for a new version on probation (its 5xx fails it).
   */
  serverErrorAnswers: (entry: HeldWrite) => boolean
}

/**
 * Drains the buffer into `target`: `concurrency` lanes, each taking the head write of the free client
 * with the highest priority, so a client never has two writes in flight and its order is kept. A write
 * the process fails (connection error, or a 5xx unless `serverErrorAnswers` it) stays held, the lanes
 * stop, and the caller rolls back or retries.
 */
export async function replayInto(
  buffer: WriteBuffer,
  target: ServiceProcess,
  options: ReplayOptions,
): Promise<ReplayResult> {
  const busy = new Set<string>()
  const outcome: { failure: { error: string; failedWrite: number } | null } = { failure: null }
  let replayed = 0
  let priority = new Map<string, number>()

  const refreshPriority = () => {
    const clients = [...buffer.clientQueues.keys()]
    if (clients.some((c) => !priority.has(c))) priority = new Map(options.priority(clients))
  }

  const lane = async (): Promise<void> => {
    while (!outcome.failure && !options.halt?.aborted) {
      refreshPriority()
      const client = pickClient(buffer.clientQueues, priority, engaged(buffer, busy))
      if (client === null) {
        if (buffer.empty && busy.size === 0 && !options.keepGoing()) return
        await changeOrTimeout(buffer, 25)
        continue
      }
      const entry = buffer.clientQueues.get(client)![0]!
      busy.add(client)
      try {
        if (await sendOne(buffer, entry, target, options)) replayed += 1
      } catch (error) {
        outcome.failure = { error: (error as Error).message, failedWrite: entry.id }
      } finally {
        busy.delete(client)
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, lane))
  return outcome.failure ? { ok: false, replayed, ...outcome.failure } : { ok: true, replayed }
}

/** True when the write was answered by the process; false when validation had refused it. */
async function sendOne(
  buffer: WriteBuffer,
  entry: HeldWrite,
  target: ServiceProcess,
  options: Pick<ReplayOptions, 'timeoutMs' | 'cutoff' | 'serverErrorAnswers' | 'onNoAnswer'>,
): Promise<boolean> {
  // Recovered with its body in the journal only: read back once, checked, and those bytes are sent.
  const read = entry.unchecked && entry.state === 'held' ? await readAndCheck(buffer, entry) : null
  const verdict = read?.verdict ?? (await entry.verdict)
  if (!verdict.ok) {
    await buffer.refuse(entry, verdict)
    return false
  }
  if (entry.state !== 'held') return false
  entry.state = 'sending'
  try {
    const body = read?.body ?? (await buffer.bodyOf(entry))
    const answer = await sendBuffered(target, entry, body, options.timeoutMs, options.cutoff)
      .catch((error: unknown) => {
        // Sent, perhaps whole, with no answer: `target` may have applied it.
        entry.maybeApplied = true
        throw error
      })
      .catch((error: unknown) => {
        if (!(error instanceof ReplayTimedOut) || !options.onNoAnswer) throw error
        return { ...noAnswer(error.ms), gaveUp: error.ms }
      })
    if ('gaveUp' in answer) {
      await buffer.complete(entry, answer.status, answer.headers, answer.body)
      options.onNoAnswer?.(entry, answer.gaveUp)
      return true
    }
    // A 5xx the service sent is judged as such, even when its body was too large to pass on.
    const status = ('tooLarge' in answer ? answer.tooLarge : undefined) ?? answer.status
    if (status >= 500 && !options.serverErrorAnswers(entry))
      throw new Error(`write ${entry.id} answered ${answer.status} by ${target.version}`)
    // The journal records what the service answered (the write's outcome), the client hears our 502.
    await buffer.complete(entry, answer.status, answer.headers, answer.body, status)
    return true
  } catch (error) {
    entry.state = 'held'
    throw error
  }
}

/** `WriteBuffer.readAndCheck`, with the write marked as being sent meanwhile (another replay leaves it). */
async function readAndCheck(buffer: WriteBuffer, entry: HeldWrite): ReturnType<WriteBuffer['readAndCheck']> {
  entry.state = 'sending'
  try {
    return await buffer.readAndCheck(entry)
  } finally {
    entry.state = 'held'
  }
}

/**
 * What the client of a replayed write hears when the serving version sent nothing for `ms`: as for a live
 * request (forward.ts), 504 problem+json, saying also that the outcome is unknown. The write was sent
 * whole, so the service may have applied it (or still apply it); it is not sent again.
 */
export function noAnswer(ms: number): { status: 504; headers: Array<[string, string]>; body: Buffer } {
  return {
    status: 504,
    headers: [['content-type', 'application/problem+json']],
    body: Buffer.from(
      JSON.stringify(
        serviceDidNotAnswer(
          ms,
          ' to this write, held during an update and replayed; it was sent whole and may have been applied',
        ),
      ),
    ),
  }
}

/**
 * The clients a lane may not take now: its own loop's, and those whose head write another replay is
 * sending (a crashed service's restart replays beside the start's, which retries into whatever serves).
 * Picked anyway, that head is skipped at once and picked again: a loop of resolved promises that never
 * yields, so the other replay's answer is never read and the agent hangs.
 */
function engaged(buffer: WriteBuffer, busy: ReadonlySet<string>): ReadonlySet<string> {
  let out: Set<string> | null = null
  for (const [client, queue] of buffer.clientQueues) {
    if (queue[0]?.state !== 'sending' || busy.has(client)) continue
    out ??= new Set(busy)
    out.add(client)
  }
  return out ?? busy
}

function changeOrTimeout(buffer: WriteBuffer, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    const off = buffer.onChange(done)
    function done() {
      clearTimeout(timer)
      off()
      resolve()
    }
  })
}
