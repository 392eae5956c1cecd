import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { frameStream } from '../../delta/stream/index.ts'
import { AgentError } from '../errors.ts'
import { expectSameBytes } from '../test/fixtures.ts'
import { type RangeServer, startRangeServer } from '../test/range-server.ts'
import { RangeController } from '../transfer/controller.ts'
import { HEADER_TIMEOUT_MS } from '../transfer/header-timeout.ts'
import { fetchDeltaStream } from './stream-fetch.ts'

const BLOCK = 4096
const HEADER = 32
const FRAMED = BLOCK + HEADER
let server: RangeServer | undefined

afterEach(async () => {
  await server?.close()
  server = undefined
})

async function framedPayload(size: number, k = 8, m = 2) {
  const payload = randomBytes(size)
  const wire = await frameStream(
    payload,
    { artifact: 'app', fromVersion: '1.0.0', toVersion: '1.1.0', method: 'vcdiff', blockSize: BLOCK },
    { k, m },
  )
  return { payload, wire, sha256: createHash('sha256').update(payload).digest('hex') }
}

async function target() {
  return join(await mkdtemp(join(tmpdir(), 'deltaport-stream-')), 'payload')
}

/** The stream the loopback server serves, checked against what a signed manifest would promise. */
function requestFor(payloadSha256: string, payloadLength: number, payloadPath: string) {
  return { url: server!.url, blockSize: BLOCK, payloadSha256, payloadLength, payloadPath }
}

const small = () =>
  new RangeController({ blockSize: FRAMED, minRange: FRAMED, maxRange: 16 * FRAMED, maxParallel: 3 })

describe('fetchDeltaStream', () => {
  it('assembles and verifies a clean stream, in several parallel ranges', async () => {
    const { payload, wire, sha256 } = await framedPayload(300_000)
    server = await startRangeServer(wire)
    const path = await target()
    const result = await fetchDeltaStream({
      ...requestFor(sha256, payload.length, path),
      controller: small(),
    })
    expectSameBytes(await readFile(path), payload)
    expect(result.ranges).toBeGreaterThan(2)
    expect(result.refetchRounds).toBe(0)
    await expect(stat(`${path}.journal`)).rejects.toThrow()
  })

  it('rebuilds up to m corrupt blocks per group with FEC and no extra round trip', async () => {
    const { payload, wire, sha256 } = await framedPayload(200_000)
    // Corrupt the second data block of every group (one block per group ≤ m = 2).
    server = await startRangeServer(wire, (offset, bytes) => {
      for (let at = 0; at < bytes.length; at += FRAMED) {
        const block = (offset + at) / FRAMED
        if (Number.isInteger(block) && block > 1 && (block - 1) % 10 === 1) bytes[at + HEADER + 7]! ^= 0xff
      }
      return undefined
    })
    const path = await target()
    const result = await fetchDeltaStream({
      ...requestFor(sha256, payload.length, path),
      controller: small(),
    })
    expectSameBytes(await readFile(path), payload)
    expect(result.recoveredBlocks).toBeGreaterThanOrEqual(4)
    expect(result.refetchRounds).toBe(0)
  })

  it('re-fetches only what FEC cannot rebuild, and survives cut connections', async () => {
    const { payload, wire, sha256 } = await framedPayload(200_000)
    const damaged = new Set<number>()
    server = await startRangeServer(wire, (offset, bytes, request) => {
      if (request === 3) return 'cut'
      // First time group 1 passes, wipe 3 of its blocks (> m): it needs a targeted re-fetch.
      for (let at = 0; at < bytes.length; at += FRAMED) {
        const block = (offset + at) / FRAMED
        if (block >= 11 && block <= 13 && !damaged.has(block)) {
          damaged.add(block)
          bytes.fill(0, at, at + FRAMED)
        }
      }
      return undefined
    })
    const path = await target()
    const result = await fetchDeltaStream({
      ...requestFor(sha256, payload.length, path),
      controller: small(),
    })
    expectSameBytes(await readFile(path), payload)
    expect(result.refetchRounds).toBeGreaterThanOrEqual(1)
    // Beyond the stream itself: the cut half-range, the re-fetch (≤ one group), block 0 twice at most.
    expect(server.served()).toBeLessThan(wire.length + 24 * FRAMED)
  })

  it('resumes after an interruption without re-downloading durable groups', async () => {
    const { payload, wire, sha256 } = await framedPayload(3_000_000, 8, 2)
    server = await startRangeServer(wire)
    const path = await target()
    const abort = new AbortController()
    const request = {
      ...requestFor(sha256, payload.length, path),
    }
    await expect(
      fetchDeltaStream({
        ...request,
        signal: abort.signal,
        controller: small(),
        onProgress: (p) => {
          if (p.payloadBytes > 1_000_000) abort.abort()
        },
      }),
    ).rejects.toThrow()
    const journal = JSON.parse(await readFile(`${path}.journal`, 'utf8')) as { groupsDone: number }
    expect(journal.groupsDone).toBeGreaterThan(0)
    const before = server.served()
    const result = await fetchDeltaStream({ ...request, controller: small() })
    expect(result.resumedAtGroup).toBe(journal.groupsDone)
    expectSameBytes(await readFile(path), payload)
    const groupWire = 10 * FRAMED
    expect(server.served() - before).toBeLessThanOrEqual(
      wire.length - journal.groupsDone * groupWire + FRAMED,
    )
  })

  // A kill between removing the payload and its journal (verifyPayload, a broken stream) leaves the
  // journal alone; a payload cut short by hand leaves it promising more than the file holds.
  for (const [what, kept] of [
    ['the journal outlived its payload file', null],
    ['the payload file is shorter than the journal promises', 1000],
  ] as const) {
    it(`starts over when ${what}`, async () => {
      const { payload, wire, sha256 } = await framedPayload(300_000)
      server = await startRangeServer(wire)
      const path = await target()
      const request = requestFor(sha256, payload.length, path)
      if (kept !== null) await writeFile(path, payload.subarray(0, kept))
      const journal = { url: request.url, payloadSha256: sha256, groupsDone: 2, bytesDone: 2 * 8 * BLOCK }
      await writeFile(`${path}.journal`, JSON.stringify(journal))
      const result = await fetchDeltaStream({ ...request, controller: small() })
      expect(result.resumedAtGroup).toBe(0)
      expectSameBytes(await readFile(path), payload)
    })
  }

  it('reads no further than the range it asked for when a 206 carries the rest of the stream', async () => {
    const { payload, wire, sha256 } = await framedPayload(1_000_000)
    // Every range (block 0's probe included) answered with everything from its start to the end.
    server = await startRangeServer(wire, undefined, { ignoreRangeEnd: true })
    const path = await target()
    const result = await fetchDeltaStream({
      ...requestFor(sha256, payload.length, path),
      controller: small(),
    })
    expectSameBytes(await readFile(path), payload)
    // The stream once, and block 0 a second time: not the stream again for every range.
    expect(result.wireBytes).toBeLessThanOrEqual(wire.length + FRAMED)
  })

  it('refuses a stream that is not the one the signed manifest names', async () => {
    const { payload, wire } = await framedPayload(50_000)
    server = await startRangeServer(wire)
    const error = await fetchDeltaStream({
      ...requestFor('ab'.repeat(32), payload.length, await target()),
    }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(AgentError)
    expect((error as AgentError).code).toBe('integrity-mismatch')
  })

  // A range that fails for good ends the update's stream at once: its siblings still in flight are
  // aborted, not waited for. Before, a sibling the network held kept the failure (and the next plan or
  // the full download) back until its own 30 s stall timer (HEADER_TIMEOUT_MS, readBody's stall) fired.
  for (const sibling of ['hold', 'stall'] as const) {
    it(`aborts the ranges in flight when one fails for good (a sibling that gets ${sibling === 'hold' ? 'no answer' : 'half its body, then nothing'})`, async () => {
      const { payload, wire, sha256 } = await framedPayload(300_000)
      // Faults by range: the first data range (block 1, right after the probe's block 0) is held; the
      // first range asked for after that one reached the server is refused (404: no retry).
      let faulty = true
      let held: { request: number; at: number } | undefined
      let refused: number | undefined
      server = await startRangeServer(wire, (offset, _bytes, request) => {
        if (!faulty || offset === 0) return undefined
        if (offset === FRAMED && held === undefined) {
          held = { request, at: performance.now() }
          return sibling
        }
        if (held !== undefined && (refused === undefined || refused === offset)) {
          refused = offset
          return 'gone'
        }
        return undefined
      })
      const path = await target()
      const request = requestFor(sha256, payload.length, path)
      // Three ranges side by side from the start, small ones: the held range has siblings.
      const sideBySide = () =>
        new RangeController({
          blockSize: FRAMED,
          minRange: FRAMED,
          maxRange: 2 * FRAMED,
          minParallel: 3,
          maxParallel: 3,
        })
      const error = await fetchDeltaStream({ ...request, controller: sideBySide() }).catch((e: unknown) => e)
      const failedAt = performance.now()
      // The refusal is what is reported, not the abort of its sibling.
      expect(error).toBeInstanceOf(AgentError)
      expect((error as AgentError).code).toBe('not-found')
      expect(held).toBeDefined()
      // Reported long before the held sibling's own timer (started when it was sent, a moment before it
      // arrived) would have ended it: waiting for it took the full 30 s.
      expect(failedAt - held!.at).toBeLessThan(HEADER_TIMEOUT_MS / 2)
      // The sibling was let go: its connection closed by the agent.
      const sizeAtFailure = (await stat(path)).size
      await server.ended(held!.request)
      // Nothing written into the payload after the failure was reported, and what the journal vouches
      // for resumes into the exact payload once the network behaves.
      expect((await stat(path)).size).toBe(sizeAtFailure)
      faulty = false
      const result = await fetchDeltaStream({ ...request, controller: sideBySide() })
      expectSameBytes(await readFile(path), payload)
      expect(result.refetchRounds).toBe(0)
    })
  }
})
