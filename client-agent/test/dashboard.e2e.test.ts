/**
 * The operator dashboard end to end: a real `wrangler dev` edge gets real state (two published versions
 * with a real delta, installs and an update by an agent, telemetry, a KV config and a rejected one, a
 * rollout, a shard plan), then headless Chromium (Debian's, driven by playwright-core) logs in through
 * the form and reads the page. Writes coverage/dashboard.png (and docs/dashboard.png when
 * UPDATE_DASHBOARD_SCREENSHOT=1).
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { type Browser, chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type RunningEdge, startWranglerDev } from '../demo/local-wrangler.ts'
import { EdgeClient } from '../edge-client.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { flushTelemetry } from '../telemetry/uploader.ts'
import { makeWorkspace, type Workspace } from './fixtures.ts'
import { TEST_OPERATOR_TOKEN, TEST_TOKEN } from './local-edge.ts'

const exec = promisify(execFile)
const ROOT = join(import.meta.dirname, '..', '..')
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const NAME = 'dash-demo'
const publishAuth = { authorization: `Bearer ${TEST_TOKEN}` }

const haveChromium = existsSync(CHROMIUM)
if (!haveChromium) {
  const message = `Chromium not found at ${CHROMIUM}: install Debian's \`chromium\` (.ci/run does) or set CHROMIUM_PATH`
  // In CI a missing browser is a failure, never a silent pass.
  if (process.env.CI === 'true') {
    describe('dashboard in a browser', () => {
      it('needs Chromium', () => {
        throw new Error(message)
      })
    })
  } else {
    console.warn(`skipping the dashboard browser test: ${message}`)
  }
}

/** Writes KV `CONFIG` key `runtime` in the running edge's persisted local state (same store wrangler dev reads). */
async function putRuntimeConfig(persistTo: string, document: string): Promise<void> {
  await exec(
    join(ROOT, 'node_modules', '.bin', 'wrangler'),
    ['kv', 'key', 'put', '--binding', 'CONFIG', '--local', '--persist-to', persistTo, 'runtime', document],
    {
      cwd: ROOT,
      env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false' },
    },
  )
}

/** Two versions sharing most bytes (what a real update looks like), so the codec finds a small delta. */
function versionBytes(): { v1: Buffer; v2: Buffer } {
  const v1 = Buffer.alloc(400_000)
  let x = 12345
  for (let i = 0; i < v1.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    v1[i] = x >>> 24
  }
  const v2 = Buffer.from(v1)
  for (let i = 150_000; i < 152_000; i++) v2[i] = (v2[i] ?? 0) ^ 0x5a
  return { v1, v2 }
}

describe.runIf(haveChromium)('dashboard in a browser', () => {
  let edge: RunningEdge | undefined
  let browser: Browser | undefined
  let persistTo = ''
  let ws: Workspace
  const log: string[] = []

  beforeAll(async () => {
    persistTo = await mkdtemp(join(tmpdir(), 'deltaport-dashboard-'))
    edge = await startWranglerDev({ persistTo, token: TEST_TOKEN, operatorToken: TEST_OPERATOR_TOKEN, log })
    ws = await makeWorkspace(edge.url)
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // Chromium's sandbox needs user namespaces, which containers running as root rarely have.
      args: process.getuid?.() === 0 ? ['--no-sandbox', '--disable-dev-shm-usage'] : [],
    })
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    await edge?.stop()
    if (persistTo) await rm(persistTo, { recursive: true, force: true })
  })

  it('renders the state the test created, after a login through the form', async () => {
    if (!edge || !browser) throw new Error('setup failed')
    const url = edge.url
    // A config the edge will accept (short TTL, so the bad one below is read soon), before any request reads it.
    await putRuntimeConfig(
      persistTo,
      JSON.stringify({
        cacheTtlSeconds: 1,
        stream: { fecM: 3 },
        zones: { metricsFlushMs: 0, planCacheMs: 0 },
      }),
    )
    await sleep(1100)

    // Maintainer: two versions, the second with a real delta built by the codec from the first.
    const { v1, v2 } = versionBytes()
    const v1Path = join(ws.dir, 'v1.bin')
    const v2Path = join(ws.dir, 'v2.bin')
    await writeFile(v1Path, v1)
    await writeFile(v2Path, v2)
    const base = { edgeUrl: url, token: TEST_TOKEN, keyFile: ws.keyFile, name: NAME }
    await publishArtifact({ ...base, file: v1Path, version: '1.0.0' })
    const deltas = await buildDeltasFromPrevious(url, NAME, v2Path, 1)
    expect(deltas.length).toBe(1)
    await publishArtifact({ ...base, file: v2Path, version: '1.1.0', deltas })
    const manifest = (await new EdgeClient(url).manifest(NAME, '1.1.0')).signed
    const deltaBytes = Math.min(...manifest.deltas.map((d) => d.size))
    const savedPercent = `${((1 - deltaBytes / manifest.size) * 100).toFixed(1)} %`

    // A device installs 1.0.0 and updates to 1.1.0 (by delta); a second one reports a prefetch hit.
    await installArtifact(ws.config, { name: NAME, target: '1.0.0' })
    const update = await installArtifact(ws.config, { name: NAME, target: '1.1.0' })
    expect(update.method).toBe('delta')
    const device = new TelemetryQueue(ws.config.installRoot)
    expect((await flushTelemetry(device, url)).events).toBe(2)
    const other = new TelemetryQueue(join(ws.dir, 'other-device'))
    const at = new Date().toISOString()
    await other.record([
      { artifact: NAME, version: '1.1.0', at, count: 1, kind: 'update' },
      { artifact: NAME, version: '1.1.0', at, count: 1, kind: 'prefetch-hit' },
    ])
    expect((await flushTelemetry(other, url)).events).toBe(2)

    // A staged rollout of 1.1.0, one cohort client reporting, and a shard plan.
    const rollout = await fetch(`${url}/v1/rollouts/${NAME}/stable/start`, {
      method: 'POST',
      headers: { ...publishAuth, 'content-type': 'application/json' },
      body: JSON.stringify({
        version: '1.1.0',
        stages: [
          { percent: 10, durationMs: 3_600_000 },
          { percent: 100, durationMs: 3_600_000 },
        ],
      }),
    })
    expect(rollout.status, await rollout.clone().text()).toBe(201)
    // Two clients the first stage admits report back: one installed, one failed.
    const admitted: string[] = []
    for (let i = 0; admitted.length < 2 && i < 400; i++) {
      const client = `dashboard-client-${i}`
      const check = await fetch(`${url}/v1/rollouts/${NAME}/stable?client=${client}`)
      if (((await check.json()) as { in: boolean }).in) admitted.push(client)
    }
    for (const [i, client] of admitted.entries()) {
      const outcome = await fetch(`${url}/v1/rollouts/${NAME}/stable/outcomes`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          client,
          version: '1.1.0',
          ...(i === 0 ? { outcome: 'installed' } : { outcome: 'failed', errorClass: 'health-check' }),
        }),
      })
      expect(outcome.status, await outcome.clone().text()).toBe(202)
    }
    const replan = await fetch(`${url}/v1/shards/replan`, { method: 'POST', headers: publishAuth })
    expect(replan.status, await replan.clone().text()).toBe(200)

    // An operator typo: rejected, the good document stays in force.
    await putRuntimeConfig(persistTo, JSON.stringify({ stream: { fecK: 0 } }))
    await sleep(1100)
    await fetch(`${url}/v1/config`, { headers: publishAuth })

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
    const first = await page.goto(`${url}/dashboard`)
    expect(first?.status()).toBe(401)
    await page.fill('input[name="token"]', TEST_OPERATOR_TOKEN)
    // The login page was served at /dashboard itself (401), so wait for the dashboard's content, not a URL.
    await page.click('button[type="submit"]')
    await page.waitForSelector('#artifacts', { timeout: 30_000 })
    expect(page.url()).toBe(`${url}/dashboard`)
    expect(await page.title()).toBe('deltaport · dashboard')
    const cookies = await page.context().cookies()
    expect(cookies.find((c) => c.name === 'deltaport_operator')).toMatchObject({
      httpOnly: true,
      sameSite: 'Strict',
      // Plain http (wrangler dev): Secure is set only when the edge is reached over https.
      secure: false,
    })

    const text = async (selector: string) =>
      ((await page.locator(selector).textContent()) ?? '').replace(/\s+/g, ' ')
    const artifacts = await text('#artifacts')
    expect(artifacts).toContain(NAME)
    expect(artifacts).toContain('1.1.0')
    expect(artifacts).toContain(savedPercent)
    const rollouts = await text('#rollouts')
    expect(rollouts).toContain(NAME)
    expect(rollouts).toContain('running')
    expect(rollouts).toContain('1 / 2')
    expect(rollouts).toContain('50.0 %')
    expect(rollouts).toContain('health-check')
    expect(await text('#hot')).toContain(NAME)
    // Deliveries: the install, its update and the other device's update; one of them a prefetch hit.
    expect(await text('#prefetch')).toContain('33.3 %')
    expect(await text('#shards')).toMatch(/Plan v\d+/)
    expect(await page.locator('#forecast svg').count()).toBeGreaterThan(0)
    const config = await text('#config')
    expect(config).toContain('KV document')
    expect(config).toContain('"fecM": 3')
    expect(config).toContain('stream.fecK')
    expect(await page.locator('.error').count()).toBe(0)

    await mkdir(join(ROOT, 'coverage'), { recursive: true })
    await page.screenshot({ path: join(ROOT, 'coverage', 'dashboard.png'), fullPage: true })
    if (process.env.UPDATE_DASHBOARD_SCREENSHOT === '1') {
      await page.screenshot({ path: join(ROOT, 'docs', 'dashboard.png'), fullPage: true })
    }
  }, 180_000)
})
