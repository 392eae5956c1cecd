import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapSettings } from '../../../schemas/swap.ts'
import { WriteBuffer } from '../buffer.ts'
import { SwapJournal } from '../journal.ts'
import { ClientLoadTracker, TierMap } from '../priority.ts'
import { SwapProxy } from '../proxy.ts'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('SwapProxy.listen', () => {
  it('returns 0, binding nothing, when a stop came while it was binding', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-proxy-'))
    dirs.push(dir)
    const settings = SwapSettings.parse({})
    const journal = new SwapJournal(join(dir, 'swap.journal'))
    await journal.open()
    const proxy = new SwapProxy(
      settings,
      new WriteBuffer(settings, journal, null),
      new TierMap(settings),
      new ClientLoadTracker(),
    )
    // A host name is looked up before the bind: the stop arrives in between. Node then never binds
    // nor calls back; the start waited on this forever.
    const listening = proxy.listen(0, 'localhost')
    proxy.stopAccepting()
    expect(await Promise.race([listening, sleep(5000).then(() => 'still waiting')])).toBe(0)
    await proxy.close(100)
    // A stop before the bind binds nothing either.
    expect(await proxy.listen(0, '127.0.0.1')).toBe(0)
    await journal.close()
  })
})
