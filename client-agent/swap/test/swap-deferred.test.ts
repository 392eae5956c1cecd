import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapSettings } from '../../../schemas/swap.ts'
import { RunFiles } from '../run-files.ts'
import { sleep } from '../service-process.ts'
import { Supervisor } from '../supervisor.ts'
import type { SwapOutcome } from '../update-source.ts'
import { cleanup, harness, post, splitWrite, tempDir, waitFor, within } from './harness.ts'

/**
 * A swap the *running* version cannot take part in (its prepare, drain or flush fails while it keeps
 * running) is not the new version's fault: it is abandoned cleanly and tried again later with back-off,
 * never blacklisted nor reported as rolled back. Real sample-service processes, real HTTP on loopback.
 */
afterAll(cleanup)

describe('buffered swap: deferred when the running version cannot take part', () => {
  it('defers a swap whose drain outlasts stopTimeoutMs (a slow upload), then retries it with back-off', async () => {
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0' }], {
      stopTimeoutMs: 600,
      deferRetryMs: 1500,
      deferRetryMaxMs: 6000,
    })
    // A slow upload to v1: its headers and part of its body are in, the rest comes much later.
    const slow = splitWrite(h.port, 'slow', 1)
    await waitFor(() => h.supervisor.counters.forwarded >= 1, 10_000)
    await sleep(100)
    const swap = h.supervisor.checkForUpdate()
    await h.until((e) => e.type === 'buffering')
    // Held while the swap waits for the upload: two writes of one client, in order.
    const first = post(h.port, 'held', 1)
    await waitFor(() => h.supervisor.counters.held >= 1, 10_000)
    const second = post(h.port, 'held', 2)
    await waitFor(() => h.supervisor.counters.held >= 2, 10_000)

    const report = await within(swap, 20_000, 'the deferred swap')
    expect(report).toMatchObject({
      version: '2.0.0',
      serving: '1.0.0',
      outcome: 'deferred',
      errorClass: 'drain',
      retry: { attempt: 1, inMs: 1500 },
    })
    // The old version kept serving and took the held writes, in order; nothing was lost.
    for (const [answer, seq] of [
      [first, 1],
      [second, 2],
    ] as const) {
      expect(await (await within(answer, 10_000, `held write ${seq}`)).json()).toMatchObject({
        seq,
        version: '1.0.0',
        applied: true,
      })
    }
    slow.finish()
    const upload = await within(slow.answered, 10_000, 'the slow upload')
    expect(JSON.parse(upload.body)).toMatchObject({ seq: 1, version: '1.0.0', applied: true })
    expect(h.supervisor.mode).toBe('pass')
    expect(h.supervisor.version).toBe('1.0.0')
    // Not the new version's fault: not blacklisted, not reported to the rollout coordinator, and the
    // store's current points at the version that serves.
    expect([...(await new RunFiles(join(h.dir, 'run')).failedVersions())]).toEqual([])
    expect(h.outcomes).toEqual([])
    expect(h.restored).toEqual([['2.0.0', '1.0.0']])
    // The retry policy is visible: in the log and in the supervisor's status.
    expect(
      h.events.some((e) => e.type === 'error' && /deferred.*retried in 2 s \(attempt 1/.test(e.message)),
    ).toBe(true)
    expect(h.supervisor.deferred).toEqual([{ version: '2.0.0', attempt: 1, retryAt: expect.any(Number) }])

    // During the back-off the version is not offered...
    expect(await h.supervisor.checkForUpdate()).toBeNull()
    expect(h.asked.at(-1)?.has('2.0.0')).toBe(true)
    // ...after it, it is, and the swap goes through.
    const retryAt = h.supervisor.deferred[0]!.retryAt
    await sleep(Math.max(0, retryAt - Date.now()) + 50)
    const retried = await within(h.supervisor.checkForUpdate(), 20_000, 'the retried swap')
    expect(retried).toMatchObject({ version: '2.0.0', outcome: 'installed', serving: '2.0.0' })
    expect(h.asked.at(-1)?.has('2.0.0')).toBe(false)
    expect(h.supervisor.deferred).toEqual([])
    expect(h.outcomes).toEqual([expect.objectContaining({ version: '2.0.0', outcome: 'installed' })])
    expect(await (await post(h.port, 'held', 3)).json()).toMatchObject({ seq: 3, version: '2.0.0' })
    const held = (await h.log()).filter((l) => l.client === 'held')
    expect(held.map((l) => [l.seq, l.version])).toEqual([
      [1, '1.0.0'],
      [2, '1.0.0'],
      [3, '2.0.0'],
    ])
  })

  it('defers a swap whose prepare hook the running version refuses, with a doubling, capped back-off', async () => {
    const dir = await tempDir('deltaport-swap-prepare-')
    // Refuses to prepare (busy) the first `busy` times it is asked, then agrees; answers its version.
    const service = async (version: string, busy: number) => {
      const file = join(dir, `svc-${version}.mjs`)
      await writeFile(
        file,
        `import { createServer } from 'node:http'
let asked = 0
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    if (req.url === '/prepare' && ++asked <= ${busy}) {
      res.statusCode = 503
      return res.end('busy')
    }
    res.end(JSON.stringify({ version: ${JSON.stringify(version)} }))
  })
})
process.on('SIGTERM', () => process.exit(0))
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
      )
      return file
    }
    const outcomes: SwapOutcome[] = []
    const supervisor = await Supervisor.start({
      command: [process.execPath, '{artifact}'],
      runDir: join(dir, 'run'),
      dataDir: join(dir, 'data'),
      settings: SwapSettings.parse({ deferRetryMs: 1000, deferRetryMaxMs: 3000 }),
      initial: { version: '1.0.0', artifactPath: await service('1.0.0', 3) },
      host: '127.0.0.1',
      port: 0,
      stdio: 'ignore',
      reporter: { report: async (o) => void outcomes.push(o) },
    })
    try {
      const v2 = { version: '2.0.0', artifactPath: await service('2.0.0', 0) }
      const waits: number[] = []
      for (let i = 0; i < 3; i++) {
        const report = await supervisor.swapTo(v2)
        expect(report).toMatchObject({ outcome: 'deferred', errorClass: 'prepare', serving: '1.0.0' })
        waits.push(report.retry?.inMs ?? -1)
      }
      expect(waits).toEqual([1000, 2000, 3000])
      expect(outcomes).toEqual([])
      expect([...(await new RunFiles(join(dir, 'run')).failedVersions())]).toEqual([])
      const url = `http://127.0.0.1:${supervisor.publicPort}`
      expect(await (await fetch(`${url}/w`, { method: 'POST', body: 'x' })).json()).toEqual({
        version: '1.0.0',
      })
      // The fourth time v1 agrees to prepare.
      expect(await supervisor.swapTo(v2)).toMatchObject({ outcome: 'installed', serving: '2.0.0' })
      expect(outcomes).toEqual([expect.objectContaining({ version: '2.0.0', outcome: 'installed' })])
      expect(await (await fetch(`${url}/w`, { method: 'POST', body: 'x' })).json()).toEqual({
        version: '2.0.0',
      })
    } finally {
      await supervisor.stop()
    }
  })

  it('still blacklists a new version that fails its own health check', async () => {
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', fail: 'health' }], {
      unhealthyGraceMs: 200,
    })
    const report = await h.supervisor.checkForUpdate()
    expect(report).toMatchObject({ outcome: 'rolled-back', errorClass: 'health-check', serving: '1.0.0' })
    expect(report?.retry).toBeUndefined()
    expect([...(await new RunFiles(join(h.dir, 'run')).failedVersions())]).toEqual(['2.0.0'])
    expect(h.outcomes).toEqual([expect.objectContaining({ version: '2.0.0', outcome: 'rolled-back' })])
    expect(await h.supervisor.checkForUpdate()).toBeNull()
  })
})
