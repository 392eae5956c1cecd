import type { JournalWrite, SwapSettings } from '../../schemas/swap.ts'
import type { BodyLocation, RecoveredWrite, SwapJournal } from './journal.ts'
import { type BufferedRequest, type ValidatorFn, type Verdict, validateWrite } from './validator.ts'

/** How the proxy answers a held client once a process (or validation) has decided. */
export interface Responder {
  send(status: number, headers: ReadonlyArray<readonly [string, string]>, body: Uint8Array): void
  readonly gone: boolean
}

export interface HeldWrite {
  readonly id: number
  readonly client: string
  readonly method: string
  readonly path: string
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly size: number
  readonly at: number
  /** In memory until the memory cap; null once only the journal holds it. */
  body: Uint8Array | null
  location: BodyLocation | null
  journaled: boolean
  state: 'held' | 'sending' | 'done'
  /**
   * A send of it to a process ended without an answer (cut off, timed out, connection lost): that
   * process may have applied it. Such a write is only ever replayed (the journal's at-least-once, marked
   * `x-deltaport-replay`), never turned away: telling its client "not applied, retry" could apply it twice.
   */
  maybeApplied: boolean
  /**
   * Recovered from the journal with its body there only, and not validated yet: `verdict` means nothing
   * until `readAndCheck`, which the replay calls to read the body back once, for the check and the send.
   */
  unchecked: boolean
  verdict: Promise<Verdict>
  /** Null for writes recovered from the journal after an agent restart: nobody is waiting. */
  responder: Responder | null
}

export interface BufferStats {
  bytes: number
  writes: number
  memoryBytes: number
  journaled: number
  rejected: number
  cancelled: number
  /** Held writes answered 503 + Retry-After because nothing would take them in time (never applied). */
  turnedAway: number
  /** Answered writes whose `done` record could not be written (a full disk): answered all the same. */
  settleFailed: number
}

/**
 * The speculative write buffer: held writes in per-client FIFO queues (a client's writes never overtake
 * each other), bodies in memory up to `memoryBytes` and in the append-only journal beyond (with
 * `writeAhead`, every write is journaled before it is held, so an agent crash loses none of them).
 * Validation runs in the background as soon as a write is held; an invalid write is answered at once.
 */
export class WriteBuffer {
  private readonly queues = new Map<string, HeldWrite[]>()
  private readonly settings: SwapSettings
  private readonly journal: SwapJournal
  private readonly validator: ValidatorFn | null
  private nextId: number
  private bytes = 0
  private writes = 0
  private memory = 0
  private readonly counters = { journaled: 0, rejected: 0, cancelled: 0, turnedAway: 0, settleFailed: 0 }
  /** `performance.now()` of recent arrivals. */
  private readonly arrivals: number[] = []
  private listeners = new Set<() => void>()

  constructor(settings: SwapSettings, journal: SwapJournal, validator: ValidatorFn | null, lastId = 0) {
    this.settings = settings
    this.journal = journal
    this.validator = validator
    this.nextId = lastId + 1
  }

  stats(): BufferStats {
    return { bytes: this.bytes, writes: this.writes, memoryBytes: this.memory, ...this.counters }
  }

  /** Writes per second over the last 5 s (for Retry-After under load); `now` is `performance.now()`. */
  arrivalRate(now = performance.now()): number {
    while (this.arrivals.length > 0 && this.arrivals[0]! < now - 5000) this.arrivals.shift()
    return this.arrivals.length / 5
  }

  hasPending(client: string): boolean {
    return (this.queues.get(client)?.length ?? 0) > 0
  }

  /** Resolves once `client` has nothing held (at once when it has nothing now). */
  async clientDrained(client: string): Promise<void> {
    while (this.hasPending(client)) {
      await this.nextChange()
    }
  }

  /**
   * Resolves once every write `client` has held now has left the buffer (replayed, refused or turned
   * away). Writes it holds later are not waited for, so a client that keeps writing cannot starve this.
   */
  async heldSoFarSettled(client: string): Promise<void> {
    const last = this.queues.get(client)?.at(-1)
    if (!last) return
    // Each client's writes leave in order, so the last one leaving means all of them have.
    while (this.queues.get(client)?.includes(last)) {
      await this.nextChange()
    }
  }

  private nextChange(): Promise<void> {
    return new Promise<void>((resolve) => {
      const off = this.onChange(() => {
        off()
        resolve()
      })
    })
  }

  get empty(): boolean {
    return this.writes === 0
  }

  /** Snapshot of the queues for the replay loop (live arrays: new writes appear in them). */
  get clientQueues(): ReadonlyMap<string, readonly HeldWrite[]> {
    return this.queues
  }

  /** Called whenever a write is held or leaves, so a waiting replay lane can look again. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /**
   * Holds a write: journals it (durably) when write-ahead is on or memory is full, queues it behind the
   * client's earlier writes and starts validating it. Resolves once it is held.
   */
  async hold(request: BufferedRequest, responder: Responder | null, now = Date.now()): Promise<HeldWrite> {
    const arrived = performance.now()
    const id = this.nextId++
    const inMemory = this.memory + request.body.length <= this.settings.memoryBytes
    const entry: HeldWrite = {
      id,
      client: request.client,
      method: request.method,
      path: request.path,
      headers: request.headers,
      size: request.body.length,
      at: now,
      body: request.body,
      location: null,
      journaled: false,
      state: 'held',
      maybeApplied: false,
      unchecked: false,
      verdict: Promise.resolve({ ok: true }),
      responder,
    }
    // Counted before the journal write so admission sees writes whose fsync is still running.
    this.bytes += entry.size
    this.writes += 1
    // Monotonic (a wall-clock step must not empty or stretch the rate's window); `at` is wall-clock.
    this.arrivals.push(arrived)
    if (inMemory) this.memory += entry.size
    if (this.settings.writeAhead || !inMemory) {
      try {
        entry.location = await this.journal.append(toRecord(entry))
        entry.journaled = true
        this.counters.journaled += 1
      } catch (error) {
        this.bytes -= entry.size
        this.writes -= 1
        if (inMemory) this.memory -= entry.size
        throw error
      }
    }
    if (!inMemory) entry.body = null
    this.enqueue(entry)
    entry.verdict = validateWrite(request, this.settings, this.validator)
    void entry.verdict.then((verdict) => {
      if (!verdict.ok) void this.refuse(entry, verdict)
    })
    return entry
  }

  /**
   * Re-queues writes recovered from the journal (already durable; their clients are gone). Those that
   * came back with their body (the journal's `open` kept bodies up to `memoryBytes`) keep it in memory, as
   * held ones do, and are validated at once; the others stay `unchecked` and are read back from the
   * journal once, when their replay sends them (`readAndCheck`: validated on the bytes that are then
   * sent), so a backlog of `maxBufferBytes` is never in memory at once and no body is read twice.
   */
  restore(records: readonly RecoveredWrite[]): void {
    for (const r of records) {
      const body = r.body === null ? null : Buffer.from(r.body, 'base64')
      const inMemory = body !== null && this.memory + body.length <= this.settings.memoryBytes
      const entry: HeldWrite = {
        id: r.id,
        client: r.client,
        method: r.method,
        path: r.path,
        headers: r.headers,
        size: r.size,
        at: r.at,
        body: inMemory ? body : null,
        location: r.location,
        journaled: true,
        state: 'held',
        // Its client is gone and no answer of a previous agent's replay is known.
        maybeApplied: true,
        unchecked: !inMemory,
        verdict: Promise.resolve({ ok: true }),
        responder: null,
      }
      this.bytes += entry.size
      this.writes += 1
      if (inMemory) this.memory += entry.size
      this.nextId = Math.max(this.nextId, r.id + 1)
      if (body !== null) entry.verdict = validateWrite({ ...r, body }, this.settings, this.validator)
      this.enqueue(entry)
    }
  }

  /**
   * Reads an `unchecked` write's body back from the journal and validates it: the replay sends the same
   * bytes, so the body is read once. (It is durable already: it was recovered from the journal.) A body
   * that cannot be read back throws, like every read-back for a send.
   */
  async readAndCheck(entry: HeldWrite): Promise<{ verdict: Verdict; body: Uint8Array }> {
    const body = await this.bodyOf(entry)
    const verdict = await validateWrite(
      { method: entry.method, path: entry.path, headers: entry.headers, body, client: entry.client },
      this.settings,
      this.validator,
    )
    entry.unchecked = false
    entry.verdict = Promise.resolve(verdict)
    return { verdict, body }
  }

  async bodyOf(entry: HeldWrite): Promise<Uint8Array> {
    if (entry.body) return entry.body
    if (!entry.location) throw new Error(`write ${entry.id} has neither a body nor a journal copy`)
    return (await this.journal.readBody(entry.location)).body
  }

  /**
   * The write was answered by a process: the `done` record is made durable first, then the client gets
   * the real response, so a crash in between replays it (at least once) rather than loses it. When the
   * record cannot be written (a full disk), the client still gets the answer: the process has applied the
   * write, and withholding its answer would only leave the client waiting (and the replay would take the
   * agent's disk for the version's failure). A crash before the journal's next compaction may then replay
   * the write once more, the at-least-once the journal promises anyway. Counted as `settleFailed`.
   */
  async complete(
    entry: HeldWrite,
    status: number,
    headers: ReadonlyArray<readonly [string, string]>,
    body: Uint8Array,
    /** The service's own status when the client hears another (an answer too large to pass on). */
    recordedStatus = status,
  ): Promise<void> {
    if (entry.state === 'done') return
    entry.state = 'done'
    await this.markDone(entry, recordedStatus).catch(() => {
      this.counters.settleFailed += 1
    })
    entry.responder?.send(status, headers, body)
  }

  /**
   * The client went away before its write was sent anywhere: it is dropped, never applied. One a
   * process may have applied is kept (replayed, at least once, with nobody to answer): dropped, it
   * would be lost whenever that process had not applied it after all.
   */
  async cancel(entry: HeldWrite): Promise<void> {
    if (entry.state !== 'held' || entry.maybeApplied) return
    entry.state = 'done'
    this.counters.cancelled += 1
    await this.markDone(entry, 499)
  }

  /**
   * Nothing will take the held write in time (a restart hold ran out, or the agent stops while the
   * service is down): it is dropped and its client told to retry. The `done` record is made durable
   * first: a crash in between must not replay a write whose client was told to send it again.
   */
  async turnAway(entry: HeldWrite, retryAfterSeconds: number, detail: string): Promise<void> {
    if (entry.state !== 'held' || entry.maybeApplied) return
    entry.state = 'done'
    this.counters.turnedAway += 1
    await this.markDone(entry, 503)
    entry.responder?.send(
      503,
      [
        ['content-type', 'application/problem+json'],
        ['retry-after', String(retryAfterSeconds)],
      ],
      Buffer.from(
        JSON.stringify({ title: 'write not taken: the service is restarting', status: 503, detail }),
      ),
    )
  }

  /**
   * The agent is stopping and nothing will take these writes before it is gone: every held write whose
   * client still waits and that no process may have applied is turned away (503 + Retry-After, `done`
   * record first). The others stay held and journaled for the next start's replay. Returns how many.
   */
  async turnAwayUnsent(retryAfterSeconds: number, detail: string): Promise<number> {
    const unsent = [...this.queues.values()]
      .flat()
      .filter((entry) => entry.state === 'held' && entry.responder !== null && !entry.maybeApplied)
    // One failed `done` record (journal gone) must not keep the other clients waiting.
    await Promise.allSettled(unsent.map((entry) => this.turnAway(entry, retryAfterSeconds, detail)))
    return unsent.length
  }

  /**
   * Validation refused the write: the client is answered first (nothing was applied, and a restart
   * re-validates journaled writes, so the order of answer and `done` record does not matter here).
   */
  async refuse(entry: HeldWrite, verdict: Extract<Verdict, { ok: false }>): Promise<void> {
    if (entry.state !== 'held') return
    entry.state = 'done'
    this.counters.rejected += 1
    entry.responder?.send(
      verdict.status,
      [['content-type', 'application/problem+json']],
      Buffer.from(
        JSON.stringify({
          title: 'write refused during an update',
          status: verdict.status,
          detail: verdict.reason,
        }),
      ),
    )
    await this.markDone(entry, verdict.status).catch(() => undefined)
  }

  private async markDone(entry: HeldWrite, status: number): Promise<void> {
    this.remove(entry)
    if (entry.journaled) await this.journal.append({ t: 'd', id: entry.id, status })
  }

  private enqueue(entry: HeldWrite): void {
    const q = this.queues.get(entry.client)
    if (q) q.push(entry)
    else this.queues.set(entry.client, [entry])
    this.notify()
  }

  private remove(entry: HeldWrite): void {
    const q = this.queues.get(entry.client)
    const i = q ? q.indexOf(entry) : -1
    if (q && i >= 0) {
      q.splice(i, 1)
      if (q.length === 0) this.queues.delete(entry.client)
      this.bytes -= entry.size
      this.writes -= 1
      if (entry.body) this.memory -= entry.size
    }
    this.notify()
  }

  private notify(): void {
    for (const l of this.listeners) l()
  }
}

function toRecord(entry: HeldWrite): JournalWrite {
  return {
    t: 'w',
    id: entry.id,
    client: entry.client,
    method: entry.method,
    path: entry.path,
    headers: entry.headers.map(([k, v]) => [k, v] as [string, string]),
    body: Buffer.from(entry.body ?? new Uint8Array()).toString('base64'),
    at: entry.at,
  }
}
