import { join } from 'node:path'
import { describe, expect, it, vi } from 'vitest'
import { MAX_INSTALLED_PARAM } from '../../schemas/aggregation.ts'
import type { AgentConfig } from '../config.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { MAX_INSTALLED_SLICE_CHARS } from '../daemon/installed-slices.ts'
import { StagingArea } from '../daemon/staging.ts'
import { installArtifact } from '../install.ts'
import { writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

const idle = () => 0
const suite = useEdgeWorkspace()

function device(id: string, extra: Partial<AgentConfig> = {}): AgentConfig {
  return { ...suite.ws.config, installRoot: join(suite.ws.dir, `store-${id}`), ...extra }
}

/** Each of `names` published at 1.0.0, installed on the device, then 1.1.0 published as the channel head. */
async function installedWithNewerHeads(config: AgentConfig, names: string[]): Promise<void> {
  const v1 = await writeArtifact(suite.ws.dir, 'slices-1.bin', 64)
  const v2 = await writeArtifact(suite.ws.dir, 'slices-2.bin', 80)
  // Publishing eight at a time (the edge takes them concurrently); installs one after the other.
  for (let at = 0; at < names.length; at += 8) {
    await Promise.all(names.slice(at, at + 8).map((name) => suite.publish(v1.path, name, '1.0.0')))
  }
  for (const name of names) await installArtifact(config, { name })
  for (let at = 0; at < names.length; at += 8) {
    await Promise.all(names.slice(at, at + 8).map((name) => suite.publish(v2.path, name, '1.1.0')))
  }
}

describe('prefetch for every installed artifact', () => {
  it('plans and stages the update of each of 150 installed artifacts, long names too', async () => {
    const config = device('many')
    // More names than the edge takes in one `installed=` list, so the poll needs two slices. The 128
    // character names cross the daemon's 8 KiB slice length too; the edge's own 16 KiB bound on that
    // list is held against every slice by installed-slices.test.ts, which needs no 256 publishes.
    // (A first version installed 300 artifacts: 8 minutes on a loaded machine, too dear for CI.)
    const short = Array.from({ length: 80 }, (_, i) => `sl${String(i).padStart(3, '0')}`)
    const long = Array.from({ length: 70 }, (_, i) => `ll${String(i).padStart(3, '0')}`.padEnd(128, 'x'))
    const names = [...short, ...long]
    expect(names.length).toBeGreaterThan(MAX_INSTALLED_PARAM)
    expect(long.reduce((chars, name) => chars + name.length + 1, 0)).toBeGreaterThan(
      MAX_INSTALLED_SLICE_CHARS,
    )
    await installedWithNewerHeads(config, names)

    const cycle = await runDaemonCycle(config, { loadSampler: idle })
    expect(cycle.failures).toEqual([])
    const staged = new Set(cycle.staged.map((s) => `${s.name}@${s.version}`))
    const missing = names.filter((name) => !staged.has(`${name}@1.1.0`))
    expect(missing).toEqual([])
    const listed = new Set((await new StagingArea(config.installRoot).list()).map((e) => e.name))
    expect(names.filter((name) => !listed.has(name))).toEqual([])
  }, 600_000)

  it('lists the staging area a fixed number of times per cycle, not once per queue item', async () => {
    const config = device('listings')
    const names = Array.from({ length: 12 }, (_, i) => `lst${i}`)
    await installedWithNewerHeads(config, names)
    const first = await runDaemonCycle(config, { loadSampler: idle })
    expect(first.staged.filter((s) => names.includes(s.name))).toHaveLength(12)

    // Every item of the next queue is staged already: each is looked up, nothing is fetched.
    const listings = vi.spyOn(StagingArea.prototype, 'list')
    try {
      const again = await runDaemonCycle(config, { loadSampler: idle })
      expect(again.alreadyStaged.filter((s) => names.includes(s.name))).toHaveLength(12)
      expect(again.staged).toEqual([])
      // Dropping installed copies, dropping yanked ones, the cycle's index, the closing eviction and
      // the final count: five, however many items the queue holds (it was one more per item).
      expect(listings.mock.calls.length).toBeLessThanOrEqual(5)
    } finally {
      listings.mockRestore()
    }
  }, 300_000)
})
