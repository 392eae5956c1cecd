import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { installArtifact } from '../install.ts'
import { deltaUpdate as sharedDeltaUpdate } from './delta-update.ts'
import type { Fault, FaultProxy, SeenRequest } from './fault-proxy.ts'
import { expectSameBytes } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * The ranges of a delta stream (update/stream-fetch.ts) through a fault proxy in front of the real
 * edge: a range the edge answers 503 or 429 is asked again after the agent's back-off (retryWaitMs:
 * 500 ms after the first failure, doubling, jittered to 50–100 %, at least the edge's Retry-After), not at once, and no other
 * range goes out meanwhile.
 */

const suite = useEdgeWorkspace()

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

const deltaUpdate = (name: string, deltaFault: (n: number, request: SeenRequest) => Fault | undefined) =>
  sharedDeltaUpdate(suite, name, deltaFault, (started) => {
    proxy = started
  })

/**
 * Faults by range, not by arrival: the stream's ranges go out side by side (how many depends on what
 * the range controller has measured so far), so "the n-th request" is not a fixed range. `probe` for
 * the first range of the stream (block 0), `data` for the first data range; each the given times.
 */
function faultRanges(fault: Fault, times: { probe?: number; data?: number }) {
  let probeRange: string | undefined
  let dataRange: string | undefined
  const left = { probe: times.probe ?? 0, data: times.data ?? 0 }
  return (_n: number, request: SeenRequest): Fault | undefined => {
    probeRange ??= request.range
    if (request.range !== probeRange) dataRange ??= request.range
    const which = request.range === probeRange ? 'probe' : request.range === dataRange ? 'data' : null
    if (which === null || left[which] === 0) return undefined
    left[which] -= 1
    return fault
  }
}

/** The tries of one range, in order, and whether anything else went out while one waited to retry. */
function triesOf(asked: { range: string | undefined; at: number }[], range: string | undefined) {
  const tries = asked.filter((r) => r.range === range)
  // The proxy answers a fault at once: from just after a try to its retry, nothing may go out.
  const sentWhileWaiting = tries
    .slice(1)
    .flatMap((retry, i) => asked.filter((r) => r.at > tries[i]!.at + 20 && r.at < retry.at))
  return { tries, sentWhileWaiting }
}

describe('a delta-stream range the edge answers 503', () => {
  it('is asked again after the back-off, doubling, and nothing else is asked meanwhile', async () => {
    // The probe (block 0) once, then the first data range twice in a row; no Retry-After.
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate(
      'sr-503',
      faultRanges({ kind: 'unavailable' }, { probe: 1, data: 2 }),
    )
    const result = await installArtifact(config, { name: 'sr-503' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: expected 206/)])
    const asked = deltaRequests()
    const probe = triesOf(asked, asked[0]?.range)
    const data = triesOf(asked, asked.find((r) => r.range !== asked[0]?.range)?.range)
    expect(probe.tries).toHaveLength(2)
    expect(data.tries).toHaveLength(3)
    // The back-off holds every range back, the failed one's retry and any new one.
    expect(probe.sentWhileWaiting).toEqual([])
    expect(data.sentWhileWaiting).toEqual([])
    // 500 ms after a first failure, 1 s after a second, each jittered to 50–100 %.
    expect(probe.tries[1]!.at - probe.tries[0]!.at).toBeGreaterThanOrEqual(240)
    expect(data.tries[1]!.at - data.tries[0]!.at).toBeGreaterThanOrEqual(240)
    expect(data.tries[2]!.at - data.tries[1]!.at).toBeGreaterThanOrEqual(490)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })

  it("waits the answer's Retry-After when it is longer than the back-off", async () => {
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate(
      'sr-503-after',
      faultRanges({ kind: 'unavailable', retryAfter: '2' }, { data: 1 }),
    )
    const result = await installArtifact(config, { name: 'sr-503-after' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    const asked = deltaRequests()
    const data = triesOf(asked, asked.find((r) => r.range !== asked[0]?.range)?.range)
    expect(data.tries).toHaveLength(2)
    expect(data.sentWhileWaiting).toEqual([])
    expect(data.tries[1]!.at - data.tries[0]!.at).toBeGreaterThanOrEqual(1_990)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })

  it('falls back to the next plan at once when the edge asks for more than 30 s', async () => {
    const started = performance.now()
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate(
      'sr-503-long',
      faultRanges({ kind: 'unavailable', retryAfter: '120' }, { data: 1 }),
    )
    const result = await installArtifact(config, { name: 'sr-503-long' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([
      expect.stringMatching(/^chunk-sync: expected 206/),
      expect.stringMatching(/^delta: .*HTTP 503/),
    ])
    // The failed range is not asked again, and nothing new goes out after it failed (a range already
    // on its way when it did may still arrive within the same few milliseconds).
    const asked = deltaRequests()
    const failed = asked.find((r) => r.range !== asked[0]?.range)
    expect(asked.filter((r) => r.range === failed?.range)).toHaveLength(1)
    expect(asked.filter((r) => r.at > failed!.at + 20)).toEqual([])
    expect(performance.now() - started).toBeLessThan(30_000)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })
})

/** The first and last byte of a `bytes=a-b` header. */
function span(range: string | undefined): [number, number] {
  const match = /^bytes=(\d+)-(\d+)$/.exec(range ?? '')
  if (!match) throw new Error(`not a closed range: ${range}`)
  return [Number(match[1]), Number(match[2])]
}

/**
 * The first data range of the stream answered `times` times (retries of it included) with the edge's
 * honest 206 of another range: the rest of the stream from one byte after the start asked for, its
 * Content-Range saying so, as a cache that mixes up ranges sends.
 */
function shiftedDataRange(times: number) {
  let probeRange: string | undefined
  let dataRange: string | undefined
  let left = times
  return (_n: number, request: SeenRequest): Fault | undefined => {
    probeRange ??= request.range
    if (request.range === probeRange) return undefined
    dataRange ??= request.range
    if (request.range !== dataRange || left === 0) return undefined
    left -= 1
    return { kind: 'other-range', from: span(request.range)[0] + 1 }
  }
}

describe('a delta-stream range answered with a 206 of another range', () => {
  it('is not taken as blocks: it is asked again after the back-off, and the update stays a delta', async () => {
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate('sr-wrong-once', shiftedDataRange(1))
    const result = await installArtifact(config, { name: 'sr-wrong-once' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: expected 206/)])
    const asked = deltaRequests()
    const data = triesOf(asked, asked.find((r) => r.range !== asked[0]?.range)?.range)
    // A fault of that range, as a 503 is: the same range again after the back-off, nothing else
    // meanwhile (taken as blocks, the next ranges went out at once and a re-fetch round followed).
    expect(data.tries).toHaveLength(2)
    expect(data.sentWhileWaiting).toEqual([])
    expect(data.tries[1]!.at - data.tries[0]!.at).toBeGreaterThanOrEqual(240)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })

  it('on every try fails the plan naming the range asked and the Content-Range got: the full download follows', async () => {
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate(
      'sr-wrong-always',
      shiftedDataRange(Number.POSITIVE_INFINITY),
    )
    const result = await installArtifact(config, { name: 'sr-wrong-always' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    const asked = deltaRequests()
    const failed = asked.find((r) => r.range !== asked[0]?.range)?.range
    const [first, last] = span(failed)
    // A network fault of that range, not blocks that stayed unrecoverable (integrity-mismatch).
    expect(result.fallbacks).toEqual([
      expect.stringMatching(/^chunk-sync: expected 206/),
      expect.stringMatching(
        new RegExp(
          `^delta: delta stream range: asked for bytes ${first}-${last} of \\d+, got a 206 with Content-Range "bytes ${first + 1}-\\d+/\\d+"$`,
        ),
      ),
    ])
    // RANGE_TRIES tries of it, as for any other fault of a range.
    expect(asked.filter((r) => r.range === failed)).toHaveLength(5)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  }, 30_000)

  it('for the first range (block 0, the stream size not known yet) is asked again too', async () => {
    // The right bytes, but a Content-Range naming another start: nothing says which bytes they are.
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate(
      'sr-wrong-probe',
      faultRanges({ kind: 'lie-content-range', from: 1 }, { probe: 1 }),
    )
    const result = await installArtifact(config, { name: 'sr-wrong-probe' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: expected 206/)])
    const asked = deltaRequests()
    const probe = triesOf(asked, asked[0]?.range)
    expect(probe.tries).toHaveLength(2)
    expect(probe.tries[1]!.at - probe.tries[0]!.at).toBeGreaterThanOrEqual(240)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })
})
