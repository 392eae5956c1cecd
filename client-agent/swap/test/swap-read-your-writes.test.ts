import { afterAll, describe, expect, it } from 'vitest'
import { cleanup, harness, post, waitFor, within } from './harness.ts'

/**
 * A client whose writes were held during a swap reads after the switch while they are still being
 * replayed: the read waits for them (it sees its own writes), while other clients' reads go at once.
 * Real sample-service processes; the new version applies each write 300 ms late, so the replay is slow.
 */
afterAll(cleanup)

const read = async (url: string, client: string) => {
  const answer = await fetch(`${url}/state?client=${client}`, { headers: { 'x-client-id': client } })
  return (await answer.json()) as { client: string; lastSeq: number; version: string }
}

describe('buffered swap: a client reads its own held writes', () => {
  it('sends a read that arrives during the replay after the writes its client had held', async () => {
    const h = await harness(
      [{ version: '1.0.0' }, { version: '2.0.0', startupDelayMs: 1000, writeDelayMs: 300 }],
      { probationMs: 200 },
    )
    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')
    const writes = [1, 2, 3, 4].map((seq) => post(h.port, 'ryw-live', seq))
    await waitFor(() => h.supervisor.counters.held >= 4, 10_000)
    await h.until((e) => e.type === 'switched')
    // The replay of the four writes takes about 1.2 s from here; a client with none held is not held up.
    const answered: string[] = []
    const [mine, other] = await Promise.all(
      ['ryw-live', 'ryw-bystander'].map(async (client) => {
        const state = await read(h.url, client)
        answered.push(client)
        return state
      }),
    )
    expect(mine).toMatchObject({ lastSeq: 4, version: '2.0.0' })
    expect(other).toMatchObject({ lastSeq: 0, version: '2.0.0' })
    expect(answered).toEqual(['ryw-bystander', 'ryw-live'])
    for (const w of await Promise.all(writes)) expect(w.status).toBe(200)
    expect(await within(swap, 30_000, 'the swap')).toMatchObject({ outcome: 'installed' })
  })
})
