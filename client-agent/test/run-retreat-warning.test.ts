import { describe, expect, it } from 'vitest'
import { describeEvent } from '../commands/run.ts'
import { installArtifact } from '../install.ts'
import { EdgeChannelSource } from '../swap/edge-source.ts'
import { setYank } from '../yank.ts'
import { unverifiedHeadWarning } from '../yank-retreat.ts'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * `deltaport run` installs updates itself (swap/edge-source.ts): a signed yank's retreat to a channel
 * head read from an index this device cannot verify (no indexKeys) is logged with the same warning
 * `deltaport update` prints (unverifiedHeadWarning), as a `warning` event.
 */

const suite = useEdgeWorkspace()

async function publish(name: string, version: string) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 20_000)
  await suite.publish(art.path, name, version)
}

const yankSigned = (name: string, version: string) =>
  setYank({
    edgeUrl: suite.edge.url,
    token: TEST_TOKEN,
    name,
    version,
    reason: 'drops writes',
    keyFile: suite.ws.keyFile,
  })

/** `run`'s update source for `name`, with the warnings it passed on. */
function sourceFor(name: string) {
  const warnings: string[] = []
  const source = new EdgeChannelSource(suite.ws.config, name, undefined, undefined, (message) =>
    warnings.push(message),
  )
  return { source, warnings }
}

describe("run's retreat from a yanked version", () => {
  it('logs the warning when the head it moves to came from an unverified index', async () => {
    for (const version of ['1.0.0', '1.1.0', '1.2.0']) await publish('rw-head', version)
    // The device ran 1.0.0, then 1.2.0; 1.2.0 is yanked, so the head is 1.1.0, newer than 1.0.0.
    await installArtifact(suite.ws.config, { name: 'rw-head', target: '1.0.0' })
    await installArtifact(suite.ws.config, { name: 'rw-head' })
    await yankSigned('rw-head', '1.2.0')
    const { source, warnings } = sourceFor('rw-head')
    expect(await source.next('1.2.0', new Set())).toMatchObject({ version: '1.1.0' })
    const expected = unverifiedHeadWarning({
      version: '1.1.0',
      retreated: { from: '1.2.0', unverifiedHead: true },
    })
    expect(expected).toMatch(/^1\.1\.0 is where the channel's head points.*no indexKeys.*and 1\.2\.0\./)
    expect(warnings).toEqual([expected])
    // The log line, as `deltaport update` words it.
    expect(describeEvent({ type: 'warning', message: warnings[0]! })).toBe(`warning: ${expected}`)
  })

  it('logs nothing when it moves back to the version it ran before', async () => {
    for (const version of ['1.0.0', '1.1.0']) await publish('rw-back', version)
    await installArtifact(suite.ws.config, { name: 'rw-back', target: '1.0.0' })
    await installArtifact(suite.ws.config, { name: 'rw-back' })
    await yankSigned('rw-back', '1.1.0')
    const { source, warnings } = sourceFor('rw-back')
    expect(await source.next('1.1.0', new Set())).toMatchObject({ version: '1.0.0' })
    expect(warnings).toEqual([])
  })
})
