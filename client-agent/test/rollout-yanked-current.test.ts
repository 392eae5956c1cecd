import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { installArtifact } from '../install.ts'
import { rolloutGate } from '../rollout/update-gate.ts'
import { ArtifactStore } from '../store.ts'
import { jsonCli, writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * A rollout holds devices outside its cohort on what they run, and devices admitted before an abort on
 * the rollout's version: neither may be a yanked version (ADR 0024). The channel decides for them.
 */
const ctx = useEdgeWorkspace()

const cli = (args: string[], configFile = ctx.ws.configFile) =>
  jsonCli(configFile, args, { DELTAPORT_TOKEN: TEST_TOKEN })

async function publish(version: string) {
  const { path } = await writeArtifact(ctx.ws.dir, `stuck-${version}.bin`, 20_000)
  await ctx.publish(path, 'stuck', version)
}

/** A device of its own (store and config file), having installed `versions` in order. */
async function device(label: string, versions: string[]): Promise<{ config: AgentConfig; file: string }> {
  const config = { ...ctx.ws.config, installRoot: join(ctx.ws.dir, label) }
  for (const version of versions) await installArtifact(config, { name: 'stuck', target: version })
  const file = join(ctx.ws.dir, `${label}.json`)
  await writeFile(file, JSON.stringify(config))
  return { config, file }
}

beforeAll(async () => {
  for (const version of ['1.0.0', '1.1.0', '2.0.0']) await publish(version)
  // A first stage that admits nobody for an hour: every device that asks is held.
  const started = await cli([
    'rollout',
    'start',
    'stuck',
    '--version',
    '2.0.0',
    '--stages',
    '0,100',
    '--stage-duration',
    '1h',
  ])
  expect(started.code).toBe(0)
})

describe('a rollout never holds a device on a yanked version', () => {
  it('lets a device outside the cohort leave a version yanked under the rollout for the channel head', async () => {
    const outside = await device('outside', ['1.0.0', '1.1.0'])
    expect(await rolloutGate(outside.config, 'stuck', undefined)).toMatchObject({ kind: 'held' })
    expect((await cli(['yank', 'stuck@1.1.0', '--reason', 'loses settings'])).code).toBe(0)

    expect(await rolloutGate(outside.config, 'stuck', undefined)).toMatchObject({
      kind: 'free',
      check: { in: false, state: 'running' },
    })
    const updated = await cli(['update', 'stuck'], outside.file)
    expect(updated.code).toBe(0)
    expect(updated.json?.install).toMatchObject({ version: '2.0.0', previous: '1.1.0' })
    expect((await new ArtifactStore(outside.config.installRoot, 'stuck').state()).current).toBe('2.0.0')
  })

  it('lets a device on the rollout version retreat once a yank of it aborted the rollout', async () => {
    const onTarget = await device('on-target', ['1.0.0', '2.0.0'])
    const yanked = await cli(['yank', 'stuck@2.0.0', '--reason', 'corrupts the cache'])
    expect(yanked.code).toBe(0)
    expect(yanked.json?.yank).toMatchObject({ rolloutsAborted: ['stable'] })

    expect(await rolloutGate(onTarget.config, 'stuck', undefined)).toMatchObject({
      kind: 'free',
      check: { state: 'aborted' },
    })
    const updated = await cli(['update', 'stuck'], onTarget.file)
    expect(updated.code).toBe(0)
    // The signed yank moves it back to what it ran before (the head, 1.0.0, since 1.1.0 is yanked too).
    expect(updated.json?.install).toMatchObject({ version: '1.0.0', retreated: { from: '2.0.0' } })
  })

  it('still holds a device whose version is not yanked', async () => {
    const fine = await device('fine', ['1.0.0'])
    // The aborted rollout of 2.0.0 still answers; 1.0.0 is not yanked: held as before.
    expect(await rolloutGate(fine.config, 'stuck', undefined)).toMatchObject({
      kind: 'held',
      current: '1.0.0',
    })
  })
})
