import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { parseJournal } from '../journal.ts'
import { sleep } from '../service-process.ts'
import { cleanup, harness, journalSettled, post, waitFor, within } from './harness.ts'

/**
 * The serving version crashes (after its probation) and is restarted: requests that arrive while it is
 * down are held like writes during a swap and forwarded once the restarted process is healthy. Writes
 * join the swap buffer (its admission, journal and replay); a GET, HEAD or OPTIONS without a body waits
 * for the restarted process. Past the buffer's bounds, past `restartHoldMs`, or when the agent stops,
 * they get 503 + Retry-After, and a write turned away is never applied. Real sample-service processes,
 * real HTTP on loopback.
 */
afterAll(cleanup)

type Harness = Awaited<ReturnType<typeof harness>>

/** Kills the one service process `h` runs and waits until its restart is pending (nothing runs then). */
async function crash(h: Harness): Promise<number> {
  const pids = await h.recordedPids()
  expect(pids).toHaveLength(1)
  const restarts = h.events.filter((e) => e.type === 'service-restarted').length
  process.kill(pids[0]!, 'SIGKILL')
  await waitFor(
    () => h.events.filter((e) => e.type === 'service-restarted').length > restarts,
    20_000,
    () => `no restart in ${JSON.stringify(h.events)}`,
  )
  // The requests below really arrive while the service is down.
  expect(await h.running()).toEqual([])
  return pids[0]!
}

/** A request's answer, and whether it has come yet. */
function track(answer: Promise<Response>) {
  const state: { done: boolean; response: Promise<Response> } = { done: false, response: answer }
  void answer.then(
    () => {
      state.done = true
    },
    () => {
      state.done = true
    },
  )
  return state
}

const write = (h: Harness, client: string, seq: number, data = '') =>
  fetch(`${h.url}/write`, {
    method: 'POST',
    headers: { 'x-client-id': client, 'content-type': 'application/json' },
    body: JSON.stringify({ seq, data }),
  })

/** A bodiless GET (or another method) as client `client`. */
const read = (h: Harness, client: string, init: RequestInit = {}) =>
  fetch(`${h.url}/state?client=${client}`, { ...init, headers: { 'x-client-id': client } })

const journalPending = async (h: Harness) =>
  parseJournal(await readFile(join(h.dir, 'run', 'swap.journal'))).pending

/**
 * 2.0.0 is swapped in and crashes 1.5 s after it listens, inside the early-crash window
 * (healthTimeoutMs) of its switch: a fall-back to 1.0.0, which takes `previousStartMs` to listen, so
 * requests sent when this returns arrive while nothing runs.
 */
async function fallingBack(previousStartMs: number): Promise<Harness> {
  const h = await harness(
    [
      { version: '1.0.0', startupDelayMs: previousStartMs },
      { version: '2.0.0', crashAfterMs: 1500 },
    ],
    { probationMs: 200, healthTimeoutMs: 10_000 },
  )
  expect((await h.swapTo('2.0.0')).outcome).toBe('installed')
  await h.until((e) => e.type === 'rolling-back', 20_000)
  return h
}

describe('buffered swap: requests while the serving version restarts after a crash', () => {
  it('holds reads and writes that arrive during the back-off and forwards them once it is back', async () => {
    // healthTimeoutMs is also the early-crash window after a switch: the crash below comes after it.
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0' }], {
      healthTimeoutMs: 3000,
      probationMs: 200,
      // Long enough that the requests below still arrive during the back-off on a loaded machine (at
      // 1.5 s a CI run once saw the restarted process take the write live instead of the replay).
      restartBackoffMs: 4000,
    })
    expect((await h.swapTo('2.0.0')).outcome).toBe('installed')
    await sleep(3500)
    const dead = await crash(h)
    const held = [read(h, 'held'), read(h, 'other'), write(h, 'held', 1)]
    const [r1, r2, w] = await within(Promise.all(held), 30_000, 'the held requests')
    expect([r1!.status, r2!.status, w!.status]).toEqual([200, 200, 200])
    expect(await r1!.json()).toMatchObject({ client: 'held', version: '2.0.0' })
    expect(await r2!.json()).toMatchObject({ client: 'other', version: '2.0.0' })
    expect(await w!.json()).toMatchObject({ seq: 1, version: '2.0.0', applied: true })
    // Answered by the restarted copy (not a rollback): 2.0.0 still serves, in a new process.
    expect(h.supervisor.version).toBe('2.0.0')
    expect(await h.recordedPids()).not.toContain(dead)
    expect(h.events.map((e) => e.type)).not.toContain('rolling-back')
    // The held write was applied once, by the replay, and nothing was refused.
    expect((await h.log()).filter((l) => l.client === 'held')).toEqual([
      { client: 'held', seq: 1, version: '2.0.0', replay: true },
    ])
    expect(h.supervisor.counters).toMatchObject({ unavailable: 0, refused503: 0 })
    expect(await journalPending(h)).toEqual([])
    // And it goes on serving live.
    expect(await (await write(h, 'held', 2)).json()).toMatchObject({ seq: 2, applied: true })
  })

  it('sends a held read after its client’s held writes are replayed, so it sees them', async () => {
    const h = await harness([{ version: '1.0.0' }], { restartBackoffMs: 1500 })
    await crash(h)
    const writes = [1, 2, 3, 4, 5].map((seq) => write(h, 'ryw', seq))
    await waitFor(() => h.supervisor.counters.held >= 5, 10_000)
    const [mine, other] = await within(
      Promise.all([read(h, 'ryw'), read(h, 'ryw-other')]),
      30_000,
      'the held reads',
    )
    expect(await mine.json()).toMatchObject({ client: 'ryw', lastSeq: 5, version: '1.0.0' })
    expect(await other.json()).toMatchObject({ client: 'ryw-other', lastSeq: 0 })
    for (const w of await Promise.all(writes)) expect(w.status).toBe(200)
  })

  it('answers 503 + Retry-After at once past the hold bounds, and to requests it cannot hold', async () => {
    const h = await harness([{ version: '1.0.0' }], {
      restartBackoffMs: 3000,
      // Two held requests at most (one under the default tier's shedAt of 0.8), 4 KiB of held bodies.
      maxBufferedWrites: 2,
      maxBufferBytes: 4096,
    })
    await crash(h)
    const first = track(read(h, 'a'))
    await waitFor(() => h.supervisor.counters.heldReads >= 1, 10_000)
    const answers = await within(
      Promise.all([
        // Over the held-count bound.
        read(h, 'b'),
        // Over the held-bytes bound (a body the service would take: under maxBodyBytes and its 64 KiB).
        write(h, 'c', 1, 'x'.repeat(8000)),
        // A method that may have effects and is not a write here: it cannot wait.
        read(h, 'd', { method: 'PURGE' }),
        // A read with a body cannot wait either.
        read(h, 'e', { method: 'OPTIONS', body: 'x' }),
      ]),
      10_000,
      'the refused requests',
    )
    // Answered while the held read still waits for the restart.
    expect(first.done).toBe(false)
    for (const answer of answers) {
      expect(answer.status).toBe(503)
      expect(Number(answer.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    }
    const answer = await within(first.response, 30_000, 'the held read')
    expect(answer.status).toBe(200)
    expect(await answer.json()).toMatchObject({ client: 'a', version: '1.0.0' })
    // The write refused for its size was never applied.
    expect((await h.log()).filter((l) => l.client === 'c')).toEqual([])
  })

  it('answers 503 + Retry-After when the restart outlasts restartHoldMs; the write turned away is never applied', async () => {
    // The restart is due after 300 ms but takes 3 s to listen: longer than the 1 s hold.
    const h = await harness([{ version: '1.0.0', startupDelayMs: 3000 }], {
      restartBackoffMs: 300,
      restartHoldMs: 1000,
    })
    await crash(h)
    const [r, w] = await within(
      Promise.all([read(h, 'late'), write(h, 'late', 1)]),
      20_000,
      'the held requests',
    )
    expect([r.status, w.status]).toEqual([503, 503])
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(Number(w.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    // Both were held, then turned away (not refused on arrival).
    expect(h.supervisor.counters).toMatchObject({ heldReads: 1, held: 1, turnedAway: 1, unavailable: 0 })
    await h.until((e) => e.type === 'error' && /^2 requests held for the restart got 503/.test(e.message))
    // Settled in the journal: no later replay applies it behind the client's back.
    expect(await journalPending(h)).toEqual([])
    // Once the restart is up, the client's retry is the first time the service sees that write.
    let back = false
    for (let i = 0; i < 300 && !back; i++) {
      const answer = await fetch(`${h.url}/health`)
      await answer.arrayBuffer()
      back = answer.status === 200
      if (!back) await sleep(50)
    }
    expect(back).toBe(true)
    // Nothing is owed a replay any more: the journal is compacted once the restarted copy serves.
    await waitFor(
      () => journalSettled(join(h.dir, 'run', 'swap.journal')),
      5000,
      () => 'journal kept',
    )
    expect(await (await write(h, 'late', 1)).json()).toMatchObject({ seq: 1, applied: true })
    expect((await h.log()).filter((l) => l.client === 'late')).toEqual([
      { client: 'late', seq: 1, version: '1.0.0', replay: false },
    ])
  })

  it('lets a swap that starts during the restart take the held writes over', async () => {
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0' }], { restartBackoffMs: 5000 })
    await crash(h)
    const waiting = read(h, 'over')
    const held = write(h, 'over', 1)
    await waitFor(() => h.supervisor.counters.heldReads >= 1 && h.supervisor.counters.held >= 1, 10_000)
    expect(await within(h.swapTo('2.0.0'), 30_000, 'the swap')).toMatchObject({ outcome: 'installed' })
    // The write is the swap's now: replayed into the new version. The read was answered when it began.
    const w = await within(held, 10_000, 'the held write')
    expect(await w.json()).toMatchObject({ seq: 1, version: '2.0.0', applied: true })
    const r = await within(waiting, 10_000, 'the waiting read')
    expect(r.status).toBe(503)
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect((await h.log()).filter((l) => l.client === 'over')).toEqual([
      { client: 'over', seq: 1, version: '2.0.0', replay: true },
    ])
    // No restarted 1.0.0 is left next to it.
    await sleep(5500)
    expect(await h.running()).toEqual(['2.0.0'])
  })

  it('answers what it holds with 503 + Retry-After when the agent stops during the restart', async () => {
    const h = await harness([{ version: '1.0.0' }], { restartBackoffMs: 5000 })
    await crash(h)
    const waiting = read(h, 'stop')
    const held = post(h.port, 'stop', 1)
    await waitFor(() => h.supervisor.counters.heldReads >= 1 && h.supervisor.counters.held >= 1, 10_000)
    await within(h.supervisor.stop(), 10_000, 'the stop')
    const [r, w] = await within(Promise.all([waiting, held]), 10_000, 'the held requests')
    expect([r.status, w.status]).toEqual([503, 503])
    expect(Number(w.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    // Never applied, and not left in the journal for the next start to replay.
    expect(await journalPending(h)).toEqual([])
    expect(await h.log()).toEqual([])
    expect(await h.running()).toEqual([])
  })

  it('holds reads and writes during a fall-back to the previous version and forwards them to it', async () => {
    const h = await fallingBack(1500)
    const held = [read(h, 'fb'), read(h, 'fb-other'), write(h, 'fb', 1)]
    const [r1, r2, w] = await within(Promise.all(held), 30_000, 'the held requests')
    expect([r1!.status, r2!.status, w!.status]).toEqual([200, 200, 200])
    expect(await r1!.json()).toMatchObject({ client: 'fb', version: '1.0.0' })
    expect(await w!.json()).toMatchObject({ seq: 1, version: '1.0.0', applied: true })
    await h.until((e) => e.type === 'swap-done' && e.report.outcome === 'rolled-back')
    expect(h.supervisor.version).toBe('1.0.0')
    expect(h.supervisor.counters).toMatchObject({ unavailable: 0, refused503: 0 })
    expect((await h.log()).filter((l) => l.client === 'fb')).toEqual([
      { client: 'fb', seq: 1, version: '1.0.0', replay: true },
    ])
    expect(await journalPending(h)).toEqual([])
  })

  it('answers what a fall-back holds with 503 + Retry-After when the agent stops during it', async () => {
    const h = await fallingBack(2000)
    const waiting = read(h, 'fb-stop')
    const held = write(h, 'fb-stop', 1)
    await waitFor(() => h.supervisor.counters.heldReads >= 1 && h.supervisor.counters.held >= 1, 10_000)
    await within(h.supervisor.stop(), 30_000, 'the stop')
    const [r, w] = await within(Promise.all([waiting, held]), 10_000, 'the held requests')
    // The stop ends the fall-back (stop-stages.test.ts): the previous version never serves again before
    // the agent exits, so the held write is turned away like the read, and never applied.
    for (const answer of [r, w]) {
      expect(answer.status).toBe(503)
      expect(Number(answer.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    }
    expect((await h.log()).filter((l) => l.client === 'fb-stop')).toEqual([])
    expect(await journalPending(h)).toEqual([])
  })
})
