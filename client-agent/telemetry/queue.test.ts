import { mkdtemp } from 'node:fs/promises'
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

  it('stays bounded while offline, dropping the oldest events', async () => {
    const queue = new TelemetryQueue(await mkdtemp(join(tmpdir(), 'deltaport-tq-')))
    await queue.record(Array.from({ length: MAX_QUEUED_EVENTS + 50 }, (_, i) => event(i)))
    const state = await queue.load()
    expect(state.events).toHaveLength(MAX_QUEUED_EVENTS)
    expect(state.dropped).toBe(50)
    expect(state.events[0]?.at).toBe(event(50).at)
  })
})
