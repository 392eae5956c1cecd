import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { MAX_QUEUED_EVENTS, TelemetryQueue } from './queue.ts'

const event = (i: number) => ({
  artifact: 'app',
  version: '1.0.0',
  at: new Date(1_700_000_000_000 + i).toISOString(),
  count: 1,
  kind: 'use' as const,
})

describe('TelemetryQueue', () => {
  it('keeps a stable client id and hands out batches in order with increasing sequence numbers', async () => {
    const queue = new TelemetryQueue(await mkdtemp(join(tmpdir(), 'deltaport-tq-')))
    const id = await queue.clientId()
    expect(id).toMatch(/^[A-Za-z0-9_-]{16}$/)
    await queue.record(Array.from({ length: 1500 }, (_, i) => event(i)))
    const first = await queue.peekBatch()
    expect(first).toMatchObject({ clientId: id, batchSeq: 0 })
    expect(first?.events).toHaveLength(1000)
    // Not acknowledged (the post failed): the same batch comes back.
    expect((await queue.peekBatch())?.batchSeq).toBe(0)
    await queue.acknowledge(1000)
    const second = await queue.peekBatch()
    expect(second?.batchSeq).toBe(1)
    expect(second?.events[0]?.at).toBe(event(1000).at)
    await queue.acknowledge(500)
    expect(await queue.peekBatch()).toBeNull()
    expect(await new TelemetryQueue(join(queue.path, '..', '..')).clientId()).toBe(id)
  })

  it('loses nothing when records and acknowledgements of several writers interleave', async () => {
    // Installs record while the daemon's flush acknowledges, each rewriting the same spool file.
    const root = await mkdtemp(join(tmpdir(), 'deltaport-tq-'))
    const queue = new TelemetryQueue(root)
    await queue.record([event(0), event(1)])
    await Promise.all([
      ...Array.from({ length: 12 }, (_, i) => new TelemetryQueue(root).record([event(100 + i)])),
      new TelemetryQueue(root).acknowledge(2),
    ])
    const state = await queue.load()
    expect(state.nextBatchSeq).toBe(1)
    expect(state.events.map((e) => e.at).sort()).toEqual(
      Array.from({ length: 12 }, (_, i) => event(100 + i).at).sort(),
    )
  })

  it('stays bounded while offline, dropping the oldest events', async () => {
    const queue = new TelemetryQueue(await mkdtemp(join(tmpdir(), 'deltaport-tq-')))
    await queue.record(Array.from({ length: MAX_QUEUED_EVENTS + 50 }, (_, i) => event(i)))
    const state = await queue.load()
    expect(state.events).toHaveLength(MAX_QUEUED_EVENTS)
    expect(state.dropped).toBe(50)
    expect(state.events[0]?.at).toBe(event(50).at)
  })
})

describe('TelemetryQueue client id', () => {
  it('replaces a garbled spool once, so the new client id sticks', async () => {
    const queue = new TelemetryQueue(await mkdtemp(join(tmpdir(), 'deltaport-tq-')))
    await queue.clientId()
    // Cut short by hand, or by a file system that lost the last write: not a queue any more.
    await writeFile(queue.path, '{"clientId":"abc')
    const first = await queue.clientId()
    // Rollout cohorts and prefetch polls are keyed by it: every read must give the same id.
    expect(await queue.clientId()).toBe(first)
    expect(await new TelemetryQueue(join(queue.path, '..', '..')).clientId()).toBe(first)
  })

  it('keeps the client id, sequence and readable events of a spool with an event it cannot read', async () => {
    const queue = new TelemetryQueue(await mkdtemp(join(tmpdir(), 'deltaport-tq-')))
    const id = await queue.clientId()
    await queue.record([event(1), event(2)])
    await queue.acknowledge(1)
    const state = await queue.load()
    // An event this agent cannot read (a kind from another version, a hand edit) among good ones.
    await writeFile(queue.path, JSON.stringify({ ...state, events: [...state.events, { kind: 'teleport' }] }))
    // An enrolled device's batches restarting at 0 would be taken by the edge for replays and dropped.
    expect(await queue.peekBatch()).toEqual({ clientId: id, batchSeq: 1, events: [event(2)] })
    expect(await queue.clientId()).toBe(id)
    expect((await queue.load()).dropped).toBe(1)
  })
})
