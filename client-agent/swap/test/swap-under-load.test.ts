import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapSettings } from '../../../schemas/swap.ts'
import { buildSampleService, type SampleBuild } from '../../sample-service/build.ts'
import { sleep } from '../service-process.ts'
import { Supervisor, type SwapReport } from '../supervisor.ts'
import { checkWriteLog, count503, splitLatency, startLoad, unexpected5xx } from './load.ts'

const CONNECTIONS = 24
/** A quarter of the load generator's clients (named swap-0, swap-1, …) are in the gold tier. */
const GOLD = Array.from({ length: CONNECTIONS / 4 }, (_, i) => `swap-${i * 4}`)
const dirs: string[] = []
/** Supervisors still running when the file ends (a timed-out test) are stopped so no service is left behind. */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

/** 20 swaps: every 4th fails (health check three times, a failing replay twice) and must roll back. */
function schedule(): SampleBuild[] {
  const failures: Array<SampleBuild['fail']> = ['health', 'writes', 'health', 'writes', 'health']
  return Array.from({ length: 20 }, (_, i) => ({
    version: `1.0.${i + 1}`,
    fail: i % 4 === 3 ? failures[(i - 3) / 4]! : 'none',
  }))
}

describe('buffered swap under load', () => {
  it('20 swaps (5 rolled back) with no dropped request, no 5xx, no lost or reordered write', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-swap-load-'))
    dirs.push(dir)
    const builds = schedule()
    const artifacts = new Map<string, string>()
    artifacts.set('1.0.0', await buildSampleService(join(dir, 'v1.0.0.js'), { version: '1.0.0' }))
    for (const b of builds)
      artifacts.set(b.version, await buildSampleService(join(dir, `v${b.version}.js`), b))
    const dataDir = join(dir, 'data')
    const supervisor = await Supervisor.start({
      command: [process.execPath, '--no-warnings', '{artifact}'],
      runDir: join(dir, 'run'),
      dataDir,
      // A buffer smaller than the number of clients: every swap runs into pressure, so the deliberate
      // 503 + Retry-After path is exercised too (gold clients are admitted to the full buffer).
      settings: SwapSettings.parse({
        // Room for a slow start on a busy machine; a build that answers "unhealthy" fails after 500 ms.
        healthTimeoutMs: 10_000,
        unhealthyGraceMs: 500,
        probationMs: 300,
        requiredHeader: 'authorization',
        maxBufferedWrites: 18,
        tiers: [{ name: 'gold', weight: 4, clients: GOLD, shedAt: 1, retryFactor: 0.5 }],
        defaultTier: { name: 'bronze', weight: 1, shedAt: 0.7, retryFactor: 1 },
      }),
      initial: { version: '1.0.0', artifactPath: artifacts.get('1.0.0')! },
      host: '127.0.0.1',
      port: 0,
      stdio: 'ignore',
      ...(process.env.SWAP_DEBUG ? { onEvent: (e) => console.error(JSON.stringify(e)) } : {}),
    })
    supervisors.push(supervisor)
    const load = await startLoad(`http://127.0.0.1:${supervisor.publicPort}`, 300, CONNECTIONS, 'swap')
    const reports: SwapReport[] = []
    const since = Date.now() + 1000
    try {
      await sleep(2000)
      for (const b of builds) {
        reports.push(await supervisor.swapTo({ version: b.version, artifactPath: artifacts.get(b.version)! }))
        await sleep(250)
      }
      await sleep(1000)
    } finally {
      const result = await load.stop().finally(() => supervisor.stop())
      const check = await checkWriteLog(dataDir, result.acks)
      const latency = splitLatency(
        result.samples,
        reports.map((r) => ({ start: r.startedAt, end: r.endedAt })),
        since,
      )
      console.log(
        JSON.stringify({
          requests: result.requests,
          errors: result.errors,
          timeouts: result.timeouts,
          statuses: result.statuses,
          deliberate503: count503(result.samples),
          other5xx: result.samples.filter(([, , status]) => status >= 500 && status !== 503),
          check,
          latency,
          addedP99Ms: latency.during.p99 - latency.baseline.p99,
          swaps: reports.map(
            (r) =>
              `${r.version}:${r.outcome}${r.errorClass ? `(${r.errorClass})` : ''} hold ${r.holdMs} ms, ${r.buffered} held`,
          ),
        }),
      )
      expect(result.errors).toBe(0)
      expect(result.timeouts).toBe(0)
      expect(result.reqErrors).toBe(0)
      expect(unexpected5xx(result.samples)).toBe(0)
      expect(result.protocolErrors).toEqual([])
      expect(check.lost).toBe(0)
      expect(check.reordered).toBe(0)
      expect(check.duplicated).toBe(0)
      expect(check.acknowledged).toBeGreaterThan(1000)
      // Buffer pressure was real: some writes were refused with 503 + Retry-After, retried, and still
      // landed exactly once.
      expect(count503(result.samples)).toBeGreaterThan(0)
    }
    expect(reports.map((r) => r.outcome)).toEqual(
      builds.map((b) => (b.fail === 'none' ? 'installed' : 'rolled-back')),
    )
    expect(reports.filter((r) => r.errorClass === 'replay')).toHaveLength(2)
    expect(reports.filter((r) => r.errorClass === 'health-check')).toHaveLength(3)
    // The swaps really held writes while the load ran. Not every one must: clients told to come back
    // after a 503 + Retry-After may all be waiting out that pause during a 400 ms hold on a busy machine
    // (seen once in CI: one swap of 20 held none), so allow two such.
    expect(reports.filter((r) => r.buffered > 0).length).toBeGreaterThanOrEqual(reports.length - 2)
    expect(supervisor.version).toBe('1.0.19')
  }, 120_000)
})
