import { describe, expect, it } from 'vitest'
import { lockArtifact } from '../../fs/artifact-lock.ts'
import { ArtifactStore } from '../../store.ts'
import { writeArtifact } from '../../test/fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from '../../test/local-edge.ts'
import { setYank } from '../../yank.ts'
import { EdgeChannelSource } from '../edge-source.ts'

const suite = useEdgeWorkspace()

async function publish(name: string, version: string, size: number) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, size)
  await suite.publish(art.path, name, version)
}

describe("run's update source and the artifact lock", () => {
  it('skips a poll while another process changes the artifact and swaps on the next one', async () => {
    await publish('svc', '1.0.0', 50_000)
    const source = new EdgeChannelSource(suite.ws.config, 'svc')
    expect((await source.initial()).version).toBe('1.0.0')
    await publish('svc', '1.1.0', 50_000)

    const store = new ArtifactStore(suite.ws.config.installRoot, 'svc')
    const manual = await lockArtifact(store.dir, { timeoutMs: 0 })
    const started = performance.now()
    expect(await source.next('1.0.0', new Set())).toBeNull()
    // The poll did not wait out the lock (the default wait is ten minutes).
    expect(performance.now() - started).toBeLessThan(5_000)
    await manual.release()
    expect(await source.next('1.0.0', new Set())).toMatchObject({ version: '1.1.0' })
  })

  it('restores the previous version once the other process is done, not beside it', async () => {
    await publish('svc2', '1.0.0', 20_000)
    const source = new EdgeChannelSource(suite.ws.config, 'svc2')
    await source.initial()
    await publish('svc2', '1.1.0', 20_000)
    await source.next('1.0.0', new Set())
    const store = new ArtifactStore(suite.ws.config.installRoot, 'svc2')

    const other = await lockArtifact(store.dir, { timeoutMs: 0 })
    let restored = false
    const restoring = source.restore('1.1.0', '1.0.0').then(() => {
      restored = true
    })
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(restored).toBe(false)
    expect((await store.state()).current).toBe('1.1.0')
    await other.release()
    await restoring
    expect((await store.state()).current).toBe('1.0.0')
  })

  it('does not follow the channel down when the running version is yanked', async () => {
    await publish('svc3', '1.0.0', 20_000)
    await publish('svc3', '1.1.0', 20_000)
    const source = new EdgeChannelSource(suite.ws.config, 'svc3')
    expect((await source.initial()).version).toBe('1.1.0')
    await setYank({
      edgeUrl: suite.edge.url,
      token: TEST_TOKEN,
      name: 'svc3',
      version: '1.1.0',
      reason: 'bad',
    })
    // Every poll answers "nothing to do" (it used to try the older head and fail on its lower serial).
    expect(await source.next('1.1.0', new Set())).toBeNull()
    expect(await source.next('1.1.0', new Set())).toBeNull()
    await publish('svc3', '1.1.1', 20_000)
    expect(await source.next('1.1.0', new Set())).toMatchObject({ version: '1.1.1' })
  })

  it('follows a signed yank back to the version it ran before, unless that one failed to take over', async () => {
    const yankSigned = (name: string) =>
      setYank({
        edgeUrl: suite.edge.url,
        token: TEST_TOKEN,
        name,
        version: '1.1.0',
        reason: 'drops writes',
        keyFile: suite.ws.keyFile,
      })
    for (const name of ['svc4', 'svc5']) {
      await publish(name, '1.0.0', 20_000)
      const source = new EdgeChannelSource(suite.ws.config, name)
      expect((await source.initial()).version).toBe('1.0.0')
      await publish(name, '1.1.0', 20_000)
      expect(await source.next('1.0.0', new Set())).toMatchObject({ version: '1.1.0' })
      await yankSigned(name)
    }
    const store = (name: string) => new ArtifactStore(suite.ws.config.installRoot, name)
    const back = new EdgeChannelSource(suite.ws.config, 'svc4')
    expect(await back.next('1.1.0', new Set())).toMatchObject({ version: '1.0.0' })
    expect((await store('svc4').state()).current).toBe('1.0.0')
    // 1.0.0 already failed to take over in this run: the store goes back to what still serves.
    const refused = new EdgeChannelSource(suite.ws.config, 'svc5')
    expect(await refused.next('1.1.0', new Set(['1.0.0']))).toBeNull()
    expect((await store('svc5').state()).current).toBe('1.1.0')
  })
})
