import { execFile, spawn } from 'node:child_process'
import { mkdir, readdir, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { RepeatedFailures, summarize } from '../commands/daemon.ts'
import type { AgentConfig } from '../config.ts'
import { runDaemon, runDaemonCycle } from '../daemon/daemon.ts'
import { StagingArea } from '../daemon/staging.ts'
import { hashFile } from '../download.ts'
import { lockArtifact } from '../fs/artifact-lock.ts'
import { forgetTemp, openTempFor, tempPathFor } from '../fs/atomic.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { generateKeyPair, signManifest } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { type UninstallResult, uninstallArtifact } from '../uninstall.ts'
import { expectSameBytes, manifestFor, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'
import { linksOf } from './signal-links.ts'

const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const idle = () => 0
/** Other tests' artifacts can be suggested too (the region's hot set): look at one artifact's items. */
const mine = (items: { name: string; version: string }[], name = 'dbud') =>
  items.filter((i) => i.name === name).map((i) => `${i.name}@${i.version}`)
const busy = () => 8

const suite = useEdgeWorkspace()

const publish = (file: string, name: string, version: string) => suite.publish(file, name, version)

/** A device of its own (install root) so the tests do not see each other's installs or staging. */
function device(id: string, extra: Partial<AgentConfig> = {}): AgentConfig {
  return { ...suite.ws.config, installRoot: join(suite.ws.dir, `store-${id}`), ...extra }
}

/** name@1.0.0 installed on the device, name@1.1.0 published as the new channel head. */
async function installedWithNewerHead(config: AgentConfig, name: string, size: number) {
  const v1 = await writeArtifact(suite.ws.dir, `${name}-1.bin`, size)
  const v2 = await writeArtifact(suite.ws.dir, `${name}-2.bin`, size + 1000)
  await publish(v1.path, name, '1.0.0')
  await installArtifact(config, { name })
  const published = await publish(v2.path, name, '1.1.0')
  return { v1, v2, published }
}

describe('deltaport daemon against the real edge', () => {
  it('stages the newer channel head, and install then uses it for zero bytes', async () => {
    const config = device('core')
    const { v2, published } = await installedWithNewerHead(config, 'dapp', 200_000)

    const life = new AbortController()
    const cycle = await runDaemonCycle(config, {
      loadSampler: idle,
      flushTelemetry: true,
      signal: life.signal,
    })
    expect(linksOf(life.signal)).toEqual({ listeners: 0, dependants: 0 })
    expect(cycle.skipped).toBeNull()
    expect(cycle.failures).toEqual([])
    expect(cycle.staged).toContainEqual(
      expect.objectContaining({ name: 'dapp', version: '1.1.0', size: v2.bytes.length }),
    )
    expect(cycle.telemetry).toEqual({ events: 1 })
    const staging = new StagingArea(config.installRoot)
    const blob = staging.blobPath('dapp', '1.1.0')
    expect(await hashFile(blob)).toBe(published.sha256)
    expectSameBytes(await readFile(blob), v2.bytes)
    const stagedManifest = JSON.parse(
      await readFile(join(staging.itemDir('dapp', '1.1.0'), 'manifest.json'), 'utf8'),
    )
    expect(stagedManifest.signed).toMatchObject({ name: 'dapp', version: '1.1.0', sha256: published.sha256 })

    // A second cycle keeps it and downloads nothing.
    const again = await runDaemonCycle(config, { loadSampler: idle })
    expect(again.staged).toEqual([])

    const installed = await installArtifact(config, { name: 'dapp' })
    expect(installed).toMatchObject({
      version: '1.1.0',
      previous: '1.0.0',
      method: 'staged',
      bytesDownloaded: 0,
    })
    const store = new ArtifactStore(config.installRoot, 'dapp')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2.bytes)
    expect(await staging.find('dapp', '1.1.0')).toBeUndefined()
    const events = (await new TelemetryQueue(config.installRoot).load()).events
    expect(events).toContainEqual(
      expect.objectContaining({ artifact: 'dapp', version: '1.1.0', kind: 'prefetch-hit' }),
    )
  })

  it('stages a delta suggestion by the cheap plan: only its bytes cross the link', async () => {
    const config = device('delta')
    const v1 = await writeArtifact(suite.ws.dir, 'ddelta-1.bin', 300_000)
    await publish(v1.path, 'ddelta', '1.0.0')
    await installArtifact(config, { name: 'ddelta' })
    const v2 = join(suite.ws.dir, 'ddelta-2.bin')
    const v2Bytes = Buffer.concat([
      v1.bytes.subarray(0, 150_000),
      Buffer.from('patch'),
      v1.bytes.subarray(150_000),
    ])
    await writeFile(v2, v2Bytes)
    const deltas = await buildDeltasFromPrevious(suite.edge.url, 'ddelta', v2, 1)
    expect(deltas.map((d) => d.from)).toEqual(['1.0.0'])
    await publishArtifact({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      keyFile: suite.ws.keyFile,
      file: v2,
      name: 'ddelta',
      version: '1.1.0',
      deltas,
    })

    // Under a lifetime signal, as the long-running daemon runs its cycles: none of the plan's requests,
    // its deadline or the item's claim stays linked to it once the cycle is done (linked-signal.ts).
    const life = new AbortController()
    const cycle = await runDaemonCycle(config, { loadSampler: idle, signal: life.signal })
    expect(linksOf(life.signal)).toEqual({ listeners: 0, dependants: 0 })
    expect(cycle.failures).toEqual([])
    const staged = cycle.staged.find((s) => s.name === 'ddelta')
    expect(staged).toMatchObject({ version: '1.1.0', size: v2Bytes.length })
    // The update planner's choice: the delta, or chunk-sync when the one chunk around the edit plus the
    // chunk index happen to weigh less than the framed delta (random bytes cut chunks at random).
    expect(['delta', 'chunk-sync']).toContain(staged?.via)
    expect(staged?.fetched).toBeLessThan(v2Bytes.length / 20)
    const staging = new StagingArea(config.installRoot)
    expectSameBytes(await readFile(staging.blobPath('ddelta', '1.1.0')), v2Bytes)
    // Its scratch files are gone, and the install takes the staged copy for zero bytes.
    expect(await readdir(staging.partialDir)).toEqual([])
    expect(await installArtifact(config, { name: 'ddelta' })).toMatchObject({
      method: 'staged',
      bytesDownloaded: 0,
    })
  })

  it('downloads nothing on a busy host or a metered link', async () => {
    const config = device('busy')
    await installedWithNewerHead(config, 'dbusy', 50_000)
    // `high-load`, not `busy`: that word is exit 11's, another process holding an artifact.
    const onBusy = await runDaemonCycle(config, { loadSampler: busy })
    expect(onBusy).toMatchObject({ skipped: 'high-load', staged: [], stagedCount: 0 })
    const metered = await runDaemonCycle({ ...config, metered: true }, { loadSampler: idle })
    expect(metered).toMatchObject({ skipped: 'metered', staged: [], stagedCount: 0 })
    // Idle at the poll, busy by the time of the download: deferred, not downloaded.
    let samples = 0
    const getsBusy = () => (samples++ === 0 ? 0 : 8)
    const deferred = await runDaemonCycle(config, { loadSampler: getsBusy })
    expect(deferred.staged).toEqual([])
    expect(deferred.deferred).toContainEqual({ name: 'dbusy', version: '1.1.0', reason: 'high-load' })
    expect(await new StagingArea(config.installRoot).list()).toEqual([])
    // allowMetered lifts the metered rule.
    const allowed = await runDaemonCycle(
      { ...config, metered: true, allowMetered: true },
      { loadSampler: idle },
    )
    expect(allowed.staged.map((s) => `${s.name}@${s.version}`)).toContain('dbusy@1.1.0')
  })

  it('stays within the staging budget and evicts what the edge no longer suggests', async () => {
    const config = device('budget')
    await installedWithNewerHead(config, 'dbud', 100_000)
    const tiny = await runDaemonCycle({ ...config, stagingBudgetBytes: 50_000 }, { loadSampler: idle })
    expect(tiny.staged).toEqual([])
    expect(tiny.stagedCount).toBe(0)

    const roomy = { ...config, stagingBudgetBytes: 150_000 }
    const first = await runDaemonCycle(roomy, { loadSampler: idle })
    expect(mine(first.staged)).toEqual(['dbud@1.1.0'])

    const v3 = await writeArtifact(suite.ws.dir, 'dbud-3.bin', 102_000)
    await publish(v3.path, 'dbud', '1.2.0')
    // A different budget is a different prefetch request for the edge's short-lived queue cache.
    const second = await runDaemonCycle({ ...roomy, stagingBudgetBytes: 160_000 }, { loadSampler: idle })
    expect(mine(second.staged)).toEqual(['dbud@1.2.0'])
    expect(second.evicted).toContainEqual({ name: 'dbud', version: '1.1.0', size: 101_000 })
    expect(second.stagedBytes).toBeLessThanOrEqual(160_000)
    const left = await new StagingArea(config.installRoot).list()
    expect(mine(left)).toEqual(['dbud@1.2.0'])
  })

  it('does not prefetch onto a disk that would keep less than twice minFreeBytes free', async () => {
    const config = device('low-disk')
    await installedWithNewerHead(config, 'dlow', 50_000)
    // A download of it begun while the disk had room (a cycle cut off): its bytes are part of what
    // keeps the disk low now, and are given back rather than kept for weeks to be resumed.
    const staging = new StagingArea(config.installRoot)
    await staging.prepare()
    await writeFile(staging.partialPath('dlow', '1.1.0'), Buffer.alloc(20_000))
    // A floor above what any disk here has free: the real statfs says no.
    const full = await runDaemonCycle({ ...config, minFreeBytes: 2 ** 52 }, { loadSampler: idle })
    expect(full.failures).toEqual([])
    expect(mine(full.staged, 'dlow')).toEqual([])
    expect(full.deferred).toContainEqual(expect.objectContaining({ name: 'dlow', reason: 'low-disk' }))
    expect(await readdir(staging.partialDir)).toEqual([])
    const roomy = await runDaemonCycle(config, { loadSampler: idle })
    expect(mine(roomy.staged, 'dlow')).toEqual(['dlow@1.1.0'])
  })

  it('leaves an artifact alone while an update of it runs, and stages it once that is done', async () => {
    const config = device('updating')
    await installedWithNewerHead(config, 'dupd', 50_000)
    // An `update dupd` holds the artifact's lock while it downloads the very version the queue suggests:
    // staging it too would fetch every byte twice, and fill the disk the update checked it had.
    const store = new ArtifactStore(config.installRoot, 'dupd')
    const update = await lockArtifact(store.dir, { timeoutMs: 0 })
    let during: Awaited<ReturnType<typeof runDaemonCycle>>
    try {
      during = await runDaemonCycle(config, { loadSampler: idle })
    } finally {
      await update.release()
    }
    expect(during.failures).toEqual([])
    expect(mine(during.staged, 'dupd')).toEqual([])
    expect(during.deferred).toContainEqual({ name: 'dupd', version: '1.1.0', reason: 'updating' })
    const after = await runDaemonCycle(config, { loadSampler: idle })
    expect(mine(after.staged, 'dupd')).toEqual(['dupd@1.1.0'])
  })

  it('drops an item whose artifact is uninstalled while it is fetched: no staged copy is left', async () => {
    const config = device('uninstalled')
    await installedWithNewerHead(config, 'dgone', 50_000)
    // `deltaport uninstall dgone` typed while the daemon fetches dgone@1.1.0, made deterministic: it
    // runs to its end between the daemon's claim on the item and the blob's request to the edge.
    let uninstalled: UninstallResult | null = null
    const uninstallDuringFetch: typeof fetch = async (input, init) => {
      const url = input instanceof Request ? input.url : String(input)
      if (uninstalled === null && url.endsWith('/dgone/1.1.0/blob'))
        uninstalled = await uninstallArtifact(config, { name: 'dgone' })
      return fetch(input, init)
    }
    const cycle = await runDaemonCycle(config, { loadSampler: idle, fetchImpl: uninstallDuringFetch })
    expect(uninstalled).toMatchObject({ removed: [{ name: 'dgone', versions: ['1.0.0'] }] })
    expect(cycle.failures).toEqual([])
    expect(mine(cycle.staged, 'dgone')).toEqual([])
    expect(cycle.dropped).toContainEqual({ name: 'dgone', version: '1.1.0' })
    const staging = new StagingArea(config.installRoot)
    expect(await staging.holds('dgone')).toBe(false)
    expect(await readdir(staging.partialDir)).toEqual([])
    expect(await new ArtifactStore(config.installRoot, 'dgone').installedVersions()).toEqual([])
  })

  it('drops staged versions once they are installed some other way', async () => {
    const config = device('drop')
    await installedWithNewerHead(config, 'ddrop', 20_000)
    await runDaemonCycle(config, { loadSampler: idle })
    expect(await new StagingArea(config.installRoot).find('ddrop', '1.1.0')).toBeDefined()
    // The same version lands in the store by another way (another tool, an older agent).
    const staging = new StagingArea(config.installRoot)
    const copy = join(suite.ws.dir, 'ddrop-copy')
    await writeFile(copy, await readFile(staging.blobPath('ddrop', '1.1.0')))
    const envelope = JSON.parse(
      await readFile(join(staging.itemDir('ddrop', '1.1.0'), 'manifest.json'), 'utf8'),
    )
    await new ArtifactStore(config.installRoot, 'ddrop').commitVersion(copy, envelope)
    const cycle = await runDaemonCycle(config, { loadSampler: busy })
    expect(cycle.dropped).toEqual([{ name: 'ddrop', version: '1.1.0' }])
    expect(await staging.find('ddrop', '1.1.0')).toBeUndefined()
    // The queue still offers it (1.0.0 is current): an installed version is named, not silently left out.
    const again = await runDaemonCycle(config, { loadSampler: idle })
    expect(again.queued).toBe(1)
    expect(again.alreadyInstalled).toEqual([{ name: 'ddrop', version: '1.1.0' }])
    expect(again.staged).toEqual([])
  })

  it('sweeps what a daemon killed while staging left in the staging area', async () => {
    const config = device('killed-put')
    await installedWithNewerHead(config, 'dkill', 20_000)
    await runDaemonCycle(config, { loadSampler: idle })
    const staging = new StagingArea(config.installRoot)
    const itemDir = staging.itemDir('dkill', '1.1.0')
    // put() killed between assembling the item under a temp name and renaming it into place, and an
    // index write killed before its rename: neither is ever listed, counted in the budget or reused.
    const half = tempPathFor(staging.itemDir('dkill', '1.2.0'))
    await mkdir(half)
    await writeFile(join(half, 'blob'), Buffer.alloc(20_000))
    const index = tempPathFor(join(staging.root, 'index.json'))
    await writeFile(index, '{')
    const anHourAgo = new Date(Date.now() - 3_600_000)
    for (const path of [half, index]) await utimes(path, anHourAgo, anHourAgo)
    await runDaemonCycle(config, { loadSampler: busy })
    expect(await readdir(join(itemDir, '..'))).toEqual(['1.1.0'])
    expect(await readdir(staging.root)).not.toContain(basename(index))
    expect(await staging.find('dkill', '1.1.0')).toBeDefined()
  })

  it('sweeps a half-staged item dated ahead of the clock (the clock was stepped back since)', async () => {
    const config = device('killed-ahead')
    await installedWithNewerHead(config, 'dahead', 20_000)
    const staging = new StagingArea(config.installRoot)
    // A daemon killed mid-put while the clock ran a day fast (no RTC, before NTP's first sync), then
    // NTP stepped it back: the leftover is dated after this process started, yet no live writer's.
    const half = tempPathFor(staging.itemDir('dahead', '1.1.0'))
    await mkdir(half, { recursive: true })
    await writeFile(join(half, 'blob'), Buffer.alloc(20_000))
    const tomorrow = new Date(Date.now() + 86_400_000)
    await utimes(half, tomorrow, tomorrow)
    await runDaemonCycle(config, { loadSampler: busy })
    expect(await readdir(join(half, '..'))).toEqual([])
  })

  it("sweeps, while it runs for hours, what commands that failed after it started left, but no live writer's", async () => {
    const config = device('longrun-sweep')
    await installedWithNewerHead(config, 'dsweep', 20_000)
    const store = new ArtifactStore(config.installRoot, 'dsweep')
    const staging = new StagingArea(config.installRoot)
    // Left after this process (the daemon) started: a killed install's version folder and rebuilt
    // output, and an install's staging index write killed before its rename.
    const version = tempPathFor(store.versionDir('1.2.0'))
    await mkdir(version)
    await writeFile(join(version, 'blob'), Buffer.alloc(20_000))
    const output = tempPathFor(store.workPath('1.2.0.out'))
    await writeFile(output, Buffer.alloc(20_000))
    await staging.prepare()
    const index = tempPathFor(join(staging.root, 'index.json'))
    await writeFile(index, '{')
    // One this process is writing right now (a rebuild of its own under way): never taken.
    const live = await openTempFor(store.workPath('1.3.0.out'))
    const left = [version, output, index]
    const present = async () => {
      const here = await Promise.all(
        [...left, live.temp].map((path) =>
          stat(path).then(
            () => basename(path),
            () => null,
          ),
        ),
      )
      return here.filter((entry) => entry !== null)
    }
    const later = (ms: number) => () => new Date(Date.now() + ms)

    // Fresh: they may be a live writer's still, and stay.
    await runDaemonCycle(config, { loadSampler: busy })
    expect(await present()).toHaveLength(4)
    // An hour on, but another process holds the artifact (it may be writing them): left to it.
    const held = await lockArtifact(store.dir, { timeoutMs: 0 })
    await runDaemonCycle(config, { loadSampler: busy, now: later(2 * 3_600_000) })
    await held.release()
    expect(await present()).toEqual([basename(version), basename(output), basename(live.temp)])
    // An hour on and nobody holds it: the abandoned ones go, the open one stays.
    await runDaemonCycle(config, { loadSampler: busy, now: later(2 * 3_600_000) })
    expect(await present()).toEqual([basename(live.temp)])
    await live.handle.close()
    await rm(live.temp, { force: true })
    forgetTemp(live.temp)
  })

  it('stages nothing of an artifact whose record of failed swaps cannot be read, and says why', async () => {
    const config = device('unreadable-run')
    await installedWithNewerHead(config, 'drunrec', 10_000)
    // Which versions failed a swap here is unknown (EACCES for another user; a directory for root).
    const state = join(new ArtifactStore(config.installRoot, 'drunrec').dir, 'run', 'state.json')
    await mkdir(state, { recursive: true })
    const cycle = await runDaemonCycle(config, { loadSampler: idle })
    expect(cycle.staged.filter((s) => s.name === 'drunrec')).toEqual([])
    expect(cycle.failures).toContainEqual(
      expect.objectContaining({
        name: 'drunrec',
        version: '1.1.0',
        code: 'io',
        message: expect.stringContaining(state),
      }),
    )
  })

  it('refuses to stage what no trusted key signed', async () => {
    const config = device('trust')
    await installedWithNewerHead(config, 'dtrust', 10_000)
    const stranger = await generateKeyPair()
    const cycle = await runDaemonCycle(
      { ...config, trustedKeys: [{ keyid: stranger.keyid, publicKey: stranger.publicKey }] },
      { loadSampler: idle },
    )
    expect(cycle.staged).toEqual([])
    expect(cycle.failures).toContainEqual(
      expect.objectContaining({ name: 'dtrust', version: '1.1.0', code: 'untrusted-manifest' }),
    )
    expect(cycle.stagedCount).toBe(0)
  })

  it('prints an untrusted manifest once per version, while every cycle still counts and reports it', async () => {
    const config = device('trust-quiet')
    await installedWithNewerHead(config, 'dquiet', 10_000)
    const stranger = await generateKeyPair()
    const untrusted = { ...config, trustedKeys: [{ keyid: stranger.keyid, publicKey: stranger.publicKey }] }
    const cycles = []
    for (let i = 0; i < 3; i++) cycles.push(await runDaemonCycle(untrusted, { loadSampler: idle }))
    for (const cycle of cycles)
      expect(cycle.failures).toContainEqual(
        expect.objectContaining({ name: 'dquiet', version: '1.1.0', code: 'untrusted-manifest' }),
      )
    const message = cycles[0]!.failures.find((f) => f.name === 'dquiet')!.message
    const repeats = new RepeatedFailures()
    const [first, second, third] = cycles.map((c) => summarize(c, null, repeats))
    expect(first).toContain(message.slice(0, 40))
    expect(first).not.toContain('as reported before')
    for (const later of [second, third]) {
      expect(later).not.toContain(message.slice(0, 40))
      expect(later).toContain('1 failed (1 as reported before)')
    }
    // Gone for a cycle (the edge got a trusted signature, say) and back: printed again.
    expect(summarize({ ...cycles[1]!, failures: [] }, null, repeats)).not.toContain('failed')
    expect(summarize(cycles[2]!, null, repeats)).toContain(message.slice(0, 40))
    // Another agent (a restart) prints it once too.
    expect(summarize(cycles[2]!, null, new RepeatedFailures())).toContain(message.slice(0, 40))
  })

  it('refuses to stage a version the signed index marks yanked, whatever the (unsigned) queue says', async () => {
    const config = device('steer')
    const { v2, published } = await installedWithNewerHead(config, 'dsteer', 20_000)
    const yank = await fetch(`${suite.edge.url}/v1/publish/dsteer/1.1.0/yank`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${TEST_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'eats the config' }),
    })
    expect(yank.status).toBe(200)
    // Something in the path (a cache serving a queue from before the yank, or a meddling proxy) puts
    // the yanked version into the prefetch queue; the edge's own answers pass through untouched.
    const steered: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      if (!new URL(String(input)).pathname.startsWith('/v1/prefetch')) return response
      const queue = (await response.json()) as { items: unknown[] }
      queue.items.unshift({
        name: 'dsteer',
        version: '1.1.0',
        probability: 1,
        confidence: 1,
        expectedValue: 1e9,
        plan: {
          kind: 'full',
          url: '/v1/artifacts/dsteer/1.1.0/blob',
          size: v2.bytes.length,
          sha256: published.sha256,
        },
      })
      return Response.json(queue)
    }
    const cycle = await runDaemonCycle(config, { loadSampler: idle, fetchImpl: steered })
    expect(mine(cycle.staged, 'dsteer')).toEqual([])
    expect(cycle.failures).toContainEqual(
      expect.objectContaining({ name: 'dsteer', version: '1.1.0', code: 'yanked' }),
    )
    expect(await new StagingArea(config.installRoot).find('dsteer', '1.1.0')).toBeUndefined()
  })

  it('drops a copy staged before its version was yanked, freeing its budget, and keeps the others', async () => {
    const config = device('yanked-later')
    await installedWithNewerHead(config, 'dlateyank', 30_000)
    await installedWithNewerHead(config, 'dlatekeep', 20_000)
    const first = await runDaemonCycle(config, { loadSampler: idle })
    expect(first.failures).toEqual([])
    const staging = new StagingArea(config.installRoot)
    expect(await staging.find('dlateyank', '1.1.0')).toBeDefined()
    expect(await staging.find('dlatekeep', '1.1.0')).toBeDefined()
    const yank = await fetch(`${suite.edge.url}/v1/publish/dlateyank/1.1.0/yank`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${TEST_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'corrupts the cache' }),
    })
    expect(yank.status).toBe(200)

    // The queue no longer names it (the head moved back to the installed 1.0.0): only the index says.
    const next = await runDaemonCycle(config, { loadSampler: idle })
    expect(mine(next.dropped, 'dlateyank')).toEqual(['dlateyank@1.1.0'])
    expect(await staging.find('dlateyank', '1.1.0')).toBeUndefined()
    expect(await readdir(staging.root)).not.toContain('dlateyank')
    expect(mine(next.dropped, 'dlatekeep')).toEqual([])
    expect(await staging.find('dlatekeep', '1.1.0')).toBeDefined()
    expect(next.stagedBytes).toBe(first.stagedBytes - 31_000)
  })

  it('keeps staged copies while the device is busy: no index is read then', async () => {
    const config = device('yanked-busy')
    await installedWithNewerHead(config, 'dbusyyank', 10_000)
    await runDaemonCycle(config, { loadSampler: idle })
    await fetch(`${suite.edge.url}/v1/publish/dbusyyank/1.1.0/yank`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${TEST_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'pulled' }),
    })
    const skipped = await runDaemonCycle(config, { loadSampler: busy })
    expect(skipped.skipped).not.toBeNull()
    expect(await new StagingArea(config.installRoot).find('dbusyyank', '1.1.0')).toBeDefined()
    const polled = await runDaemonCycle(config, { loadSampler: idle })
    expect(mine(polled.dropped, 'dbusyyank')).toEqual(['dbusyyank@1.1.0'])
  })

  it("names a failed item once in the human status line, not again before its error's own name@version", async () => {
    const stranger = await generateKeyPair()
    const config = {
      ...device('trust-line', { idleLoadPerCore: 1000 }),
      trustedKeys: [{ keyid: stranger.keyid, publicKey: stranger.publicKey }],
    }
    await installedWithNewerHead(device('trust-line'), 'dtrustline', 10_000)
    const configFile = join(suite.ws.dir, 'trust-line-device.json')
    await writeFile(configFile, JSON.stringify(config))
    const { stdout } = await run(process.execPath, [BIN, '--config', configFile, 'daemon', '--once'])
    expect(stdout).toContain('1 failed')
    expect(stdout).toContain('[dtrustline@1.1.0: no valid signature by a trusted key; it is signed by')
    expect(stdout).not.toContain('dtrustline@1.1.0: dtrustline@1.1.0:')
  })

  it('says in the status line which config key kept a cycle from polling', async () => {
    const configFile = join(suite.ws.dir, 'no-budget-device.json')
    await writeFile(configFile, JSON.stringify(device('no-budget', { stagingBudgetBytes: 0 })))
    const { stdout } = await run(process.execPath, [BIN, '--config', configFile, 'daemon', '--once'])
    expect(stdout).toContain('skipped (no-budget: stagingBudgetBytes is 0)')
  })

  it('aborts an in-flight download and resumes it on the next cycle', async () => {
    const config = device('abort', { prefetchBandwidthCapBps: 400_000 })
    const { v2 } = await installedWithNewerHead(config, 'dabort', 600_000)
    const controller = new AbortController()
    const aborted = await runDaemon(config, {
      once: true,
      signal: controller.signal,
      loadSampler: idle,
      onProgress: (_item, received) => {
        if (received > 100_000) controller.abort()
      },
    })
    expect(aborted?.aborted).toBe(true)
    const staging = new StagingArea(config.installRoot)
    const partialSize = (await stat(staging.partialPath('dabort', '1.1.0'))).size
    expect(partialSize).toBeGreaterThan(0)
    expect(partialSize).toBeLessThan(v2.bytes.length)

    const resumed = await runDaemonCycle(config, { loadSampler: idle })
    const item = resumed.staged.find((s) => s.name === 'dabort')
    expect(item?.resumedFrom).toBe(partialSize)
    expect(item?.fetched).toBe(v2.bytes.length - partialSize)
    expectSameBytes(await readFile(staging.blobPath('dabort', '1.1.0')), v2.bytes)
  })

  it('falls back to a download when the staged bytes do not verify', async () => {
    const config = device('tamper')
    const { v2 } = await installedWithNewerHead(config, 'dtamper', 40_000)
    await runDaemonCycle(config, { loadSampler: idle })
    const staging = new StagingArea(config.installRoot)
    await truncate(staging.blobPath('dtamper', '1.1.0'), 1000)
    const installed = await installArtifact(config, { name: 'dtamper' })
    expect(installed.method).toBe('full')
    expect(installed.bytesDownloaded).toBe(v2.bytes.length)
    expectSameBytes(
      await readFile(join(new ArtifactStore(config.installRoot, 'dtamper').currentLink, 'blob')),
      v2.bytes,
    )
    expect(await staging.find('dtamper', '1.1.0')).toBeUndefined()
  })

  it('runs as a long-lived process and stops cleanly on SIGTERM', async () => {
    const config = device('loop', { idleLoadPerCore: 1000 })
    const configFile = join(suite.ws.dir, 'loop-device.json')
    await writeFile(configFile, JSON.stringify(config))
    await installedWithNewerHead(config, 'dloop', 20_000)
    const child = spawn(process.execPath, [BIN, '--config', configFile, 'daemon', '--interval', '3600'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no status line; stderr: ${stderr}`)), 20_000)
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString()
        if (stdout.includes('\n')) {
          clearTimeout(timer)
          resolve()
        }
      })
    })
    expect(stdout).toMatch(/last poll .*staged \d+ .*next poll/)
    // One daemon per store: a second one would download the same items into the same partial files.
    const second = await run(process.execPath, [BIN, '--config', configFile, 'daemon', '--once']).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    )
    expect(second.code).toBe(11)
    expect(second.stderr).toContain(
      `another deltaport daemon is already prefetching into ${config.installRoot}`,
    )
    expect(second.stderr).toContain(`pid ${child.pid}`)
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(stderr).toContain('daemon stopped')
    expect(await new StagingArea(config.installRoot).find('dloop', '1.1.0')).toBeDefined()
    // Released on the way out: the next daemon runs.
    await run(process.execPath, [BIN, '--config', configFile, 'daemon', '--once'])
  })

  it('reports a failed poll under --json with its own code, like any other failure', async () => {
    const config = device('offline', { edgeUrl: 'http://127.0.0.1:9', idleLoadPerCore: 1000 })
    const configFile = join(suite.ws.dir, 'offline-device.json')
    await writeFile(configFile, JSON.stringify(config))
    const child = spawn(
      process.execPath,
      [BIN, '--config', configFile, '--json', 'daemon', '--interval', '3600'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no line from the daemon')), 20_000)
      let stdout = ''
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString()
        if (stdout.includes('\n')) {
          clearTimeout(timer)
          resolve(stdout.slice(0, stdout.indexOf('\n')))
        }
      })
    })
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    // `network` (exit 4's code), not a code of its own that no table lists.
    expect(JSON.parse(line)).toMatchObject({
      ok: false,
      error: { code: 'network', message: expect.stringContaining('cannot reach the edge') },
    })
    expect(JSON.parse(line).error.nextPollAt).toEqual(expect.any(String))
  })

  it('runs through the CLI: daemon --once --json, then install reports staged', async () => {
    const config = device('cli', { idleLoadPerCore: 1000 })
    const configFile = join(suite.ws.dir, 'cli-device.json')
    await writeFile(configFile, JSON.stringify(config))
    const { v2 } = await installedWithNewerHead(config, 'dcli', 30_000)
    const cli = async (args: string[]) => {
      const { stdout } = await run(process.execPath, [BIN, '--config', configFile, '--json', ...args])
      return JSON.parse(stdout) as Record<string, unknown>
    }
    const daemon = (await cli(['daemon', '--once'])) as {
      ok: boolean
      daemon: { staged: { name: string; version: string }[] }
    }
    expect(daemon.ok).toBe(true)
    expect(daemon.daemon.staged).toContainEqual(expect.objectContaining({ name: 'dcli', version: '1.1.0' }))
    const installed = (await cli(['install', 'dcli'])) as { install: Record<string, unknown> }
    expect(installed.install).toMatchObject({ version: '1.1.0', method: 'staged', bytesDownloaded: 0 })
    const store = new ArtifactStore(config.installRoot, 'dcli')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2.bytes)
  })
})

describe('staging area', () => {
  it('evicts least recently used first and keeps what is asked for', async () => {
    const root = join(suite.ws.dir, 'store-lru')
    const staging = new StagingArea(root)
    await staging.prepare()
    for (const [i, version] of ['1.0.0', '1.1.0', '1.2.0'].entries()) {
      const art = await writeArtifact(suite.ws.dir, `lru-${version}.bin`, 1000)
      const envelope = await signManifest(
        manifestFor({
          name: '@acme/lru',
          version,
          size: 1000,
          sha256: await hashFile(art.path),
          serial: i + 1,
        }),
        suite.ws.key,
      )
      const blob = tempPathFor(join(suite.ws.dir, 'lru-blob'))
      await writeFile(blob, art.bytes)
      await staging.put(blob, envelope, 1000 + i)
    }
    // 1.0.0 was staged first but the edge asked for it again: 1.1.0 is now the least recently used.
    await staging.touch([{ name: '@acme/lru', version: '1.0.0' }], 5000)
    const first = await staging.evictTo(2000)
    expect(first.evicted.map((e) => e.version)).toEqual(['1.1.0'])
    const second = await staging.evictTo(0, new Set([`@acme/lru\u00001.0.0`]))
    expect(second.evicted.map((e) => e.version)).toEqual(['1.2.0'])
    expect((await staging.list()).map((e) => e.version)).toEqual(['1.0.0'])
    // The index is only a cache: without it the items are found again from the files.
    await writeFile(join(staging.root, 'index.json'), 'garbage')
    expect((await staging.list()).map((e) => `${e.name}@${e.version}`)).toEqual(['@acme/lru@1.0.0'])
  })

  it('leaves no half-assembled item behind when staging fails', async () => {
    const staging = new StagingArea(join(suite.ws.dir, 'store-failed-put'))
    await staging.prepare()
    const manifest = manifestFor({
      name: 'dfail',
      version: '1.0.0',
      size: 1,
      sha256: 'a'.repeat(64),
      serial: 1,
    })
    // The blob is gone by the time it is moved in (a running daemon's failure, not a kill).
    const missing = join(suite.ws.dir, 'no-such-blob')
    await expect(staging.put(missing, await signManifest(manifest, suite.ws.key))).rejects.toThrow()
    expect(await readdir(join(staging.itemDir('dfail', '1.0.0'), '..'))).toEqual([])
  })
})
