import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../../delta/errors.ts'
import { AgentError } from '../errors.ts'
import { installArtifact } from '../install.ts'
import { isTransient } from '../transfer/backoff.ts'
import { deltaUpdate } from './delta-update.ts'
import type { Fault, FaultProxy, SeenRequest } from './fault-proxy.ts'
import { expectSameBytes } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * The two delta-stream fetches that once had no retries, through a fault proxy in front of the real
 * edge: the first range (block 0, the stream's metadata) when the connection is cut before any answer
 * (fetch rejects bare, `TypeError: fetch failed`, no AgentError), and a re-fetch round for blocks FEC
 * could not rebuild. Each is asked again after the agent's back-off and the update stays a delta.
 */

const suite = useEdgeWorkspace()

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

const update = (name: string, deltaFault: (n: number, request: SeenRequest) => Fault | undefined) =>
  deltaUpdate(suite, name, deltaFault, (started) => {
    proxy = started
  })

/** The first and last byte of a `bytes=a-b` header. */
function span(range: string | undefined): [number, number] {
  const match = /^bytes=(\d+)-(\d+)$/.exec(range ?? '')
  if (!match) throw new Error(`not a closed range: ${range}`)
  return [Number(match[1]), Number(match[2])]
}

describe("the delta stream's first range", () => {
  it('cut before any answer once is asked again after the back-off, and the update stays a delta', async () => {
    const { config, v2Bytes, deltaRequests, store } = await update('rf-probe-cut', (n) =>
      n === 1 ? { kind: 'cut-before-answer' } : undefined,
    )
    const result = await installArtifact(config, { name: 'rf-probe-cut' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: expected 206/)])
    const asked = deltaRequests()
    expect(asked[1]?.range).toBe(asked[0]?.range)
    expect(span(asked[0]?.range)[0]).toBe(0)
    // 500 ms after a first failure, jittered to 50–100 %.
    expect(asked[1]!.at - asked[0]!.at).toBeGreaterThanOrEqual(240)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })

  it('cut on every try ends the delta as a network fault: the full download follows', async () => {
    const { config, v2Bytes, deltaRequests, store } = await update('rf-probe-dead', () => ({
      kind: 'cut-before-answer',
    }))
    const result = await installArtifact(config, { name: 'rf-probe-dead' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([
      expect.stringMatching(/^chunk-sync: expected 206/),
      expect.stringMatching(/^delta: delta stream .*fetch failed/),
    ])
    // RANGE_TRIES tries of block 0, nothing after it.
    expect(deltaRequests().map((r) => span(r.range)[0])).toEqual([0, 0, 0, 0, 0])
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  }, 30_000)
})

describe('a re-fetch round for blocks FEC could not rebuild', () => {
  it('faulted once is asked again after the back-off, and the update stays a delta', async () => {
    // The first range of blocks is answered with its own bytes inverted (the right range and
    // Content-Range, damaged on the way): every block in it fails its check, more than FEC rebuilds,
    // so they are fetched again; the first such re-fetch has its connection cut halfway.
    let damaged: [number, number] | undefined
    let refetchCut = false
    const { config, v2Bytes, deltaRequests, store } = await update('rf-refetch', (n, request) => {
      if (n === 2) {
        damaged = span(request.range)
        return { kind: 'flip-bytes' }
      }
      const [start] = span(request.range)
      if (damaged && !refetchCut && start >= damaged[0] && start <= damaged[1]) {
        refetchCut = true
        return { kind: 'reset' }
      }
      return undefined
    })
    const result = await installArtifact(config, { name: 'rf-refetch' })
    expect(refetchCut).toBe(true)
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: expected 206/)])
    const refetches = deltaRequests()
      .slice(2)
      .filter((r) => {
        const [start] = span(r.range)
        return damaged !== undefined && start >= damaged[0] && start <= damaged[1]
      })
    // The cut re-fetch, then the same range again after the back-off (500 ms jittered to 50–100 %).
    expect(refetches.length).toBeGreaterThanOrEqual(2)
    expect(refetches[1]?.range).toBe(refetches[0]?.range)
    expect(refetches[1]!.at - refetches[0]!.at).toBeGreaterThanOrEqual(240)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })
})

describe('isTransient, the one rule of every retry loop', () => {
  const socket = (code: string) => Object.assign(new Error(`read ${code}`), { code })

  it("counts fetch/undici's bare network faults as the agent's own network errors", () => {
    expect(isTransient(new TypeError('fetch failed', { cause: socket('ECONNRESET') }))).toBe(true)
    expect(isTransient(new TypeError('terminated', { cause: socket('UND_ERR_SOCKET') }))).toBe(true)
    expect(isTransient(socket('ECONNREFUSED'))).toBe(true)
    expect(isTransient(new AgentError('network', 'no data for 30000 ms'))).toBe(true)
    expect(isTransient(new AgentError('edge-rejected', 'HTTP 503', { status: 503 }))).toBe(true)
  })

  it('does not count a broken stream, a file error, a refusal or a bug', () => {
    expect(isTransient(new DeltaFormatError('bad-stream', 'not a delta stream'))).toBe(false)
    expect(
      isTransient(Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC', syscall: 'write' })),
    ).toBe(false)
    expect(isTransient(new AgentError('edge-rejected', 'HTTP 403', { status: 403 }))).toBe(false)
    expect(isTransient(new TypeError("Cannot read properties of undefined (reading 'length')"))).toBe(false)
  })
})
