import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { EdgeClient } from '../edge-client.ts'
import { installArtifact } from '../install.ts'
import { controlRollout } from '../rollout/client.ts'
import { rolloutGate } from '../rollout/update-gate.ts'
import { ArtifactStore } from '../store.ts'
import { jsonCli, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const ctx = useEdgeWorkspace()

const cli = (args: string[], configFile = ctx.ws.configFile) =>
  jsonCli(configFile, args, { DELTAPORT_TOKEN: TEST_TOKEN })

async function publish(version: string) {
  const { path } = await writeArtifact(ctx.ws.dir, `ahead-${version}.bin`, 20_000)
  await ctx.publish(path, 'ahead', version)
}

const status = () => controlRollout(new EdgeClient(ctx.edge.url), TEST_TOKEN, 'ahead', 'stable', 'status')

beforeAll(async () => {
  await publish('1.0.0')
  await publish('2.0.0')
  // Everyone is in from the first stage: every device that asks is admitted to 2.0.0.
  const started = await cli(['rollout', 'start', 'ahead', '--version', '2.0.0', '--stages', '100'])
  expect(started.code).toBe(0)
  // A fix is published meanwhile: the channel head moves past the rollout's version.
  await publish('3.0.0')
})

describe('a rollout whose version the channel head has overtaken', () => {
  it('leaves a device already on a newer version there, and reports nothing against the rollout', async () => {
    const { config } = ctx.ws
    // Fresh installs are not gated: this device follows the head to 3.0.0.
    await installArtifact(config, { name: 'ahead', target: 'stable' })
    const store = new ArtifactStore(config.installRoot, 'ahead')
    expect((await store.state()).current).toBe('3.0.0')

    const gate = await rolloutGate(config, 'ahead', undefined)
    expect(gate).toMatchObject({ kind: 'free', check: { in: true, version: '2.0.0' } })

    const updated = await cli(['update', 'ahead'])
    expect(updated.code).toBe(0)
    expect(updated.json?.install).toMatchObject({ version: '3.0.0', alreadyCurrent: true })
    expect((await store.state()).current).toBe('3.0.0')
    // The rollout of 2.0.0 hears nothing from a device it never moved: no failure toward a halt.
    const s = await status()
    expect(s.state).toBe('running')
    expect(s.overall.counts).toEqual({ installed: 0, failed: 0, 'rolled-back': 0 })
  })

  it('still moves a device on an older version to the rollout version', async () => {
    const device = { ...ctx.ws.config, installRoot: join(ctx.ws.dir, 'device-old') }
    await installArtifact(device, { name: 'ahead', target: '1.0.0' })
    expect(await rolloutGate(device, 'ahead', undefined)).toMatchObject({ kind: 'in', version: '2.0.0' })
  })

  it('lets a signed yank of the newer version move such a device back, rollout or not', async () => {
    const device = { ...ctx.ws.config, installRoot: join(ctx.ws.dir, 'device-yanked') }
    await installArtifact(device, { name: 'ahead', target: '1.0.0' })
    await installArtifact(device, { name: 'ahead', target: 'stable' })
    const yanked = await cli(['yank', 'ahead@3.0.0', '--reason', 'corrupts the cache'])
    expect(yanked.code).toBe(0)
    // The head is back on 2.0.0, still under its rollout; the device leaves the yanked 3.0.0 for it.
    const configFile = join(ctx.ws.dir, 'device-yanked.json')
    await writeFile(configFile, JSON.stringify(device))
    const updated = await cli(['update', 'ahead'], configFile)
    expect(updated.code).toBe(0)
    expect(updated.json?.install).toMatchObject({ version: '2.0.0', retreated: { from: '3.0.0' } })
    expect((await new ArtifactStore(device.installRoot, 'ahead').state()).current).toBe('2.0.0')
  })

  it('does not hold such a device on a version yanked since, once the rollout is aborted', async () => {
    expect((await cli(['rollout', 'abort', 'ahead', '--reason', 'superseded'])).code).toBe(0)
    await publish('3.1.0')
    const device = { ...ctx.ws.config, installRoot: join(ctx.ws.dir, 'device-aborted') }
    await installArtifact(device, { name: 'ahead', target: '1.0.0' })
    await installArtifact(device, { name: 'ahead', target: 'stable' })
    expect((await cli(['yank', 'ahead@3.1.0', '--reason', 'drops writes'])).code).toBe(0)
    // Not in (the rollout is aborted), but past its version: the signed yank moves it back.
    expect(await rolloutGate(device, 'ahead', undefined)).toMatchObject({
      kind: 'free',
      check: { in: false, state: 'aborted' },
    })
    const configFile = join(ctx.ws.dir, 'device-aborted.json')
    await writeFile(configFile, JSON.stringify(device))
    const updated = await cli(['update', 'ahead'], configFile)
    expect(updated.code).toBe(0)
    expect(updated.json?.install).toMatchObject({ version: '2.0.0', retreated: { from: '3.1.0' } })
    // Now on the aborted rollout's own version: held there, and told it was reached, not the opposite.
    const held = await cli(['update', 'ahead'], configFile)
    expect(held.json?.update).toMatchObject({
      held: true,
      current: '2.0.0',
      message: 'ahead: staying on 2.0.0: it is the version of the stable rollout (the rollout is aborted)',
    })
  })
})
