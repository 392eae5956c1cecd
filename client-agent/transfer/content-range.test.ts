import { describe, expect, it } from 'vitest'
import { AgentError } from '../errors.ts'
import { assertRangeAsked } from './content-range.ts'

/** A real 206 with `contentRange` (none when null) and a body that records whether it was cancelled. */
function answer(contentRange: string | null) {
  let cancelled = false
  const body = new ReadableStream<Uint8Array>({
    pull: (controller) => controller.enqueue(new Uint8Array(16)),
    cancel: () => {
      cancelled = true
    },
  })
  const headers: Record<string, string> = contentRange === null ? {} : { 'content-range': contentRange }
  return { response: new Response(body, { status: 206, headers }), cancelled: () => cancelled }
}

async function refusal(contentRange: string | null, asked: Parameters<typeof assertRangeAsked>[1]) {
  const { response, cancelled } = answer(contentRange)
  const error = await assertRangeAsked(response, asked, 'range: ').then(
    () => null,
    (e: unknown) => e,
  )
  if (!(error instanceof AgentError)) throw new Error(`expected an AgentError, got ${String(error)}`)
  expect(cancelled()).toBe(true)
  return error
}

describe('assertRangeAsked', () => {
  it('takes exactly the range asked for, of the known total', async () => {
    await assertRangeAsked(answer('bytes 100-199/1000').response, { first: 100, last: 199, total: 1000 })
    const error = await refusal('bytes 101-199/1000', { first: 100, last: 199, total: 1000 })
    expect(error.code).toBe('network')
    expect(error.message).toBe(
      'range: asked for bytes 100-199 of 1000, got a 206 with Content-Range "bytes 101-199/1000"',
    )
    expect(error.details).toEqual({ wrongRange: true, contentRange: 'bytes 101-199/1000' })
    await refusal('bytes 100-199/999', { first: 100, last: 199, total: 1000 })
    await refusal('bytes 100-199/*', { first: 100, last: 199, total: 1000 })
    const none = await refusal(null, { first: 100, last: 199, total: 1000 })
    expect(none.message).toMatch(/Content-Range \(none\)$/)
  })

  it('with no total known, takes any decimal total past the range and nothing else', async () => {
    const asked = { first: 0, last: 99, total: null }
    await assertRangeAsked(answer('bytes 0-99/100').response, asked)
    await assertRangeAsked(answer('bytes 0-99/123456789012345').response, asked)
    for (const got of [
      'bytes 0-99/99',
      'bytes 0-99/*',
      'bytes 0-99/0100',
      'bytes 0-99/1234567890123456',
      'bytes 0-99/1e3',
      'bytes 0-98/100',
    ])
      expect((await refusal(got, asked)).message).toMatch(/of the object, got a 206/)
  })
})
