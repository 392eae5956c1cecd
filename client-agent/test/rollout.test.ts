import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'
import { RolloutStatus } from '../../schemas/rollout.ts'
import { describeDuration, describeStatus } from '../commands/rollout.ts'
import { EdgeClient } from '../edge-client.ts'
import { AgentError } from '../errors.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { checkRollout, controlRollout, reportOutcome } from '../rollout/client.ts'
import { agentClientId } from '../rollout/client-id.ts'
import { rolloutReporter, toErrorClass } from '../rollout/reporter.ts'
import { installWithinRollout, rollbackAndReport, rolloutGate } from '../rollout/update-gate.ts'
import { ArtifactStore } from '../store.ts'
import { expectSameBytes, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const ctx = useEdgeWorkspace()
const releases: Buffer[] = []

async function cli(args: string[], env: Record<string, string> = { DELTAPORT_TOKEN: TEST_TOKEN }) {
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      [BIN, '--config', ctx.ws.configFile, '--json', ...args],
      {
        env: { ...process.env, DELTAPORT_TOKEN: '', ...env },
      },
    )
    return { code: 0, stdout, stderr, json: JSON.parse(stdout) as Record<string, unknown> }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr, json: null }
  }
}

const status = async () =>
  controlRollout(new EdgeClient(ctx.edge.url), TEST_TOKEN, 'rolled', 'stable', 'status')

beforeAll(async () => {
  for (const version of ['1.0.0', '2.0.0']) {
    const { path, bytes } = await writeArtifact(ctx.ws.dir, `rolled-${version}.bin`, 40_000)
    releases.push(bytes)
    await publishArtifact({
      edgeUrl: ctx.edge.url,
      token: TEST_TOKEN,
      keyFile: ctx.ws.keyFile,
      file: path,
      name: 'rolled',
      version,
    })
  }
})

describe('deltaport update under a rollout (agent against the local edge)', () => {
  it('stays on the current version until its stage, then updates and reports; rollback reports too', async () => {
    const { config } = ctx.ws
    const edge = new EdgeClient(ctx.edge.url)
    await installArtifact(config, { name: 'rolled', target: '1.0.0' })
    expect(await checkRollout(edge, 'rolled', 'stable', await agentClientId(config))).toBeNull()

    // 0 % for 3 s, then everyone: the real alarm of the local edge advances it.
    const started = await cli([
      'rollout',
      'start',
      'rolled',
      '--version',
      '2.0.0',
      '--stages',
      '0,100',
      '--stage-duration',
      '3s,1h',
      '--max-failure-rate',
      '10%',
      '--min-sample',
      '5',
    ])
    expect(started.code).toBe(0)
    const startedStatus = RolloutStatus.parse(started.json?.rollout)
    expect(startedStatus).toMatchObject({
      state: 'running',
      currentStage: 0,
      currentPercent: 0,
      maxFailureRate: 0.1,
    })

    const held = await cli(['update', 'rolled'])
    expect(held.code).toBe(0)
    expect(String((held.json?.update as { message?: string } | undefined)?.message)).toContain(
      'staying on 1.0.0',
    )
    expect(held.json?.update).toMatchObject({
      held: true,
      current: '1.0.0',
      rollout: { in: false, stage: 1 },
    })
    const store = new ArtifactStore(config.installRoot, 'rolled')
    expect((await store.state()).current).toBe('1.0.0')

    const clientId = await agentClientId(config)
    const deadline = Date.now() + 30_000
    let check = await checkRollout(edge, 'rolled', 'stable', clientId)
    while (!check?.in && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250))
      check = await checkRollout(edge, 'rolled', 'stable', clientId)
    }
    expect(check).toMatchObject({ in: true, version: '2.0.0', state: 'running' })

    const updated = await cli(['update', 'rolled'])
    expect(updated.code).toBe(0)
    expect(updated.json?.install).toMatchObject({ name: 'rolled', version: '2.0.0', previous: '1.0.0' })
    expect((await store.state()).current).toBe('2.0.0')
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), releases[1] ?? Buffer.alloc(0))
    let s = await status()
    expect(s.overall.counts).toEqual({ installed: 1, failed: 0, 'rolled-back': 0 })
    expect(s.progress[1]?.stats.total).toBe(1)

    const rolledBack = await cli(['rollback', 'rolled'])
    expect(rolledBack.code).toBe(0)
    expect(rolledBack.json?.rollback).toMatchObject({
      from: '2.0.0',
      to: '1.0.0',
      report: { reported: true },
    })
    s = await status()
    expect(s.overall.counts).toEqual({ installed: 0, failed: 0, 'rolled-back': 1 })
    expect(s.errorClasses).toEqual([{ errorClass: 'manual-rollback', count: 1 }])

    // The swap supervisor's reporter: another device, a free-form class normalised to a slug.
    const device2 = { ...config, installRoot: join(ctx.ws.dir, 'device-2') }
    const reporter = rolloutReporter(device2, 'rolled')
    await reporter.report({ version: '2.0.0', outcome: 'rolled-back', errorClass: 'Health Check!' })
    expect(reporter.last()).toMatchObject({ reported: true, receipt: { counted: true, stage: 1 } })
    s = await status()
    expect(s.overall.counts['rolled-back']).toBe(2)
    expect(s.errorClasses).toContainEqual({ errorClass: 'health-check', count: 1 })

    // An install inside the rollout that fails for the release's own reasons is reported; network is not.
    const device3 = { ...config, installRoot: join(ctx.ws.dir, 'device-3') }
    const gate = await rolloutGate(device3, 'rolled', undefined)
    expect(gate.kind).toBe('in')
    if (gate.kind !== 'in') return
    const offline = installWithinRollout(device3, 'rolled', gate, async () => {
      throw new AgentError('network', 'link down')
    })
    await expect(offline).rejects.toMatchObject({ code: 'network' })
    expect((await status()).overall.counts.failed).toBe(0)
    const corrupt = installWithinRollout(device3, 'rolled', gate, async () => {
      throw new AgentError('integrity-mismatch', 'sha256 differs')
    })
    await expect(corrupt).rejects.toMatchObject({ code: 'integrity-mismatch' })
    s = await status()
    expect(s.overall.counts.failed).toBe(1)
    expect(s.errorClasses).toContainEqual({ errorClass: 'integrity-mismatch', count: 1 })

    const printed = await cli(['rollout', 'status', 'rolled'])
    expect(printed.code).toBe(0)
    expect(RolloutStatus.parse(printed.json?.rollout).state).toBe('running')
    const text = describeStatus(await status())
    expect(text).toContain('rolled@2.0.0 on stable: running, stage 1 (100 %)')
    expect(text).toMatch(/stage 1 100 % since .*: 0 installed, 1 failed, 2 rolled back; failure 100\.0 %/)
    expect(text).toContain('(limit 10.0 %, min sample 5)')
    // A pinned version is the operator's explicit choice: no rollout applies.
    expect((await cli(['update', 'rolled', '--to', '2.0.0'])).json?.install).toMatchObject({
      version: '2.0.0',
    })
  })

  it('maintainer commands need the token and valid options; the edge refusal is an AgentError', async () => {
    const noToken = await cli(['rollout', 'status', 'rolled'], {})
    expect(noToken.code).toBe(3)
    expect((await cli(['rollout', 'start', 'rolled', '--version', '2.0.0', '--stages', '50,10'])).code).toBe(
      2,
    )
    expect(
      (await cli(['rollout', 'start', 'rolled', '--version', '2.0.0', '--stage-duration', 'soon'])).code,
    ).toBe(2)
    expect(
      (await cli(['rollout', 'start', 'rolled', '--version', '2.0.0', '--max-failure-rate', '150%'])).code,
    ).toBe(2)
    // Out-of-range values say what the limit is, in the user's units, once.
    const tooLong = await cli([
      'rollout',
      'start',
      'rolled',
      '--version',
      '2.0.0',
      '--stage-duration',
      '100d',
    ])
    expect(tooLong.code).toBe(2)
    expect(tooLong.stdout).toContain('invalid rollout: a stage lasts at most 90 days"')
    const tooFew = await cli(['rollout', 'start', 'rolled', '--version', '2.0.0', '--min-sample', '3'])
    expect(tooFew.code).toBe(2)
    expect(tooFew.stdout).toContain('invalid rollout: the minimum sample is at least 5 reports"')
    // Already running: the edge answers 409.
    const conflict = await cli(['rollout', 'start', 'rolled', '--version', '2.0.0'])
    expect(conflict.code).toBe(5)
    expect(conflict.stderr + conflict.stdout).toContain('abort it first')
    expect((await cli(['rollout', 'status', 'nope'])).code).toBe(6)

    const edge = new EdgeClient(ctx.edge.url)
    const wrongVersion = reportOutcome(edge, 'rolled', 'stable', {
      client: await agentClientId(ctx.ws.config),
      version: '1.0.0',
      outcome: 'failed',
    })
    await expect(wrongVersion).rejects.toMatchObject({ code: 'edge-rejected', details: { status: 409 } })

    // Paused, the status says how long the stage has left once resumed (not only "paused").
    const paused = await cli(['rollout', 'pause', 'rolled', '--reason', 'looking'])
    expect(paused.code).toBe(0)
    expect(describeStatus(RolloutStatus.parse(paused.json?.rollout)).split('\n')[0]).toMatch(
      /^rolled@2\.0\.0 on stable: paused, stage 1 \(100 %\), \d+ (min|s)( \d+ s)? left before completion once resumed$/,
    )
    expect(describeDuration(90_061_000)).toBe('1 d 1 h')
    expect(describeDuration(2_520_000)).toBe('42 min')
    expect(describeDuration(400)).toBe('0 s')

    const aborted = await cli(['rollout', 'abort', 'rolled', '--reason', 'test over'])
    expect(aborted.code).toBe(0)
    const abortedStatus = RolloutStatus.parse(aborted.json?.rollout)
    expect(abortedStatus.history.at(-1)).toMatchObject({ event: 'aborted', detail: 'test over' })
    // The printed status says what happened and who signed it, not only where the rollout stands.
    const lines = describeStatus(abortedStatus).split('\n')
    const abortedAt = abortedStatus.history.at(-1)?.at ?? ''
    expect(lines.at(-1)).toMatch(
      new RegExp(`^    ${abortedAt.replace(/\./g, '\\.')} aborted in stage 1: test over \\(signed \\S+Z\\)$`),
    )
    expect(lines).toContain('  history:')
    expect(lines.some((l) => /^ {4}\S+Z stage 1 began: 100 %$/.test(l))).toBe(true)
  })

  it('rollback reports to the rollout of the channel the version came from, not the configured one', async () => {
    const publish = async (version: string, channels: string[]) => {
      const { path } = await writeArtifact(ctx.ws.dir, `betaroll-${version}.bin`, 20_000)
      await publishArtifact({
        edgeUrl: ctx.edge.url,
        token: TEST_TOKEN,
        keyFile: ctx.ws.keyFile,
        file: path,
        name: 'betaroll',
        version,
        channels,
      })
    }
    await publish('1.0.0', ['stable', 'beta'])
    await publish('2.0.0', ['beta'])
    const edge = new EdgeClient(ctx.edge.url)
    await controlRollout(edge, TEST_TOKEN, 'betaroll', 'beta', 'start', {
      version: '2.0.0',
      stages: [{ percent: 100, durationMs: 3_600_000 }],
    })
    // The configured channel is stable; this device takes the beta rollout's version.
    const device = { ...ctx.ws.config, installRoot: join(ctx.ws.dir, 'device-beta') }
    expect(device.channel).toBe('stable')
    await installArtifact(device, { name: 'betaroll', target: '1.0.0' })
    const gate = await rolloutGate(device, 'betaroll', 'beta')
    expect(gate).toMatchObject({ kind: 'in', version: '2.0.0' })
    if (gate.kind !== 'in') return
    await installWithinRollout(device, 'betaroll', gate, () =>
      installArtifact(device, { name: 'betaroll', target: '2.0.0', channel: 'beta' }),
    )

    const rolled = await rollbackAndReport(device, 'betaroll')
    expect(rolled).toMatchObject({ from: '2.0.0', to: '1.0.0', report: { reported: true } })
    const beta = await controlRollout(edge, TEST_TOKEN, 'betaroll', 'beta', 'status')
    expect(beta.overall.counts).toEqual({ installed: 0, failed: 0, 'rolled-back': 1 })
  })

  it('normalises error classes to slugs without messages', () => {
    expect(toErrorClass('Replay')).toBe('replay')
    expect(toErrorClass('Health Check!')).toBe('health-check')
    expect(toErrorClass('  --')).toBeUndefined()
    expect(toErrorClass(undefined)).toBeUndefined()
    expect(toErrorClass('x'.repeat(100))).toHaveLength(64)
  })

  it('refuses malformed rollout answers', async () => {
    const hostile = new EdgeClient('http://edge.invalid', async () =>
      Response.json({ name: 'rolled', channel: 'stable', in: 'yes' }),
    )
    const attempt = checkRollout(hostile, 'rolled', 'stable', 'client-00000001')
    await expect(attempt).rejects.toBeInstanceOf(AgentError)
    await expect(attempt).rejects.toMatchObject({ code: 'edge-rejected' })
  })
})
