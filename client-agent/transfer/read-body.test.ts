import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import { AgentError } from '../errors.ts'
import { DEFAULT_MIN_RATE, readBody } from './read-body.ts'

/** A body whose chunks come from `next` (null ends it), each after the sender's own delay. */
function bodyOf(next: (i: number) => Promise<Uint8Array | null>): Response {
  let i = 0
  return new Response(
    new ReadableStream<Uint8Array>({
      async pull(controller) {
        const chunk = await next(i++)
        if (chunk) controller.enqueue(chunk)
        else controller.close()
      },
    }),
  )
}

const fast = { bytesPerSecond: 1024, windowMs: 300 }

async function outcome(run: Promise<number>): Promise<number | AgentError> {
  return run.catch((error: unknown) => {
    if (error instanceof AgentError) return error
    throw error
  })
}

describe('readBody', () => {
  it('ends a body that trickles below the minimum rate, though it never goes silent', async () => {
    // A byte every 20 ms (50 B/s): the 30 s stall timer would never fire.
    const trickle = bodyOf(async () => {
      await sleep(20)
      return new Uint8Array(1)
    })
    const started = performance.now()
    const error = await outcome(readBody(trickle, () => undefined, { minRate: fast }))
    expect(error).toBeInstanceOf(AgentError)
    expect((error as AgentError).code).toBe('network')
    expect((error as AgentError).details.slow).toBe(true)
    expect((error as AgentError).message).toMatch(/below the minimum of 1024 B\/s/)
    expect(performance.now() - started).toBeLessThan(3000)
  })

  it("does not blame the sender for the reader's own slowness (disk, bandwidth cap)", async () => {
    // The sender answers at once; the consumer takes 40 ms per 16-byte chunk (400 B/s end to end).
    const eager = bodyOf(async (i) => (i < 20 ? new Uint8Array(16) : null))
    const total = await readBody(eager, () => sleep(40), { minRate: fast })
    expect(total).toBe(320)
  })

  it('judges whole windows: a pause followed by a burst passes, the check can be turned off', async () => {
    const bursty = bodyOf(async (i) => {
      if (i === 0) await sleep(350)
      return i < 5 ? new Uint8Array(4096) : null
    })
    expect(await readBody(bursty, () => undefined, { minRate: fast })).toBe(5 * 4096)

    const trickle = bodyOf(async (i) => {
      await sleep(10)
      return i < 60 ? new Uint8Array(1) : null
    })
    expect(await readBody(trickle, () => undefined, { minRate: { ...fast, bytesPerSecond: 0 } })).toBe(60)
  })

  it('defaults to 1 KiB/s judged over each minute of waiting', () => {
    expect(DEFAULT_MIN_RATE).toEqual({ bytesPerSecond: 1024, windowMs: 60_000 })
  })
})
