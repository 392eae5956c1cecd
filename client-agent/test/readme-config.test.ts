import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { SwapSettings } from '../../schemas/swap.ts'
import { AgentConfig, DAEMON_DEFAULTS } from '../config.ts'
import { DEFAULT_MIN_FREE_BYTES } from '../fs/free-space.ts'

/**
 * README's "Agent config" section against the schema the agent parses `deltaport.json` with: a key
 * added without a word in the README, an example key the agent would refuse (exit 3: the config is
 * strict), or a default the README quotes that the code no longer has, fails here.
 */

const README = join(import.meta.dirname, '..', '..', 'README.md')

/** A README section: from its heading to the next heading (a `# comment` inside a code block is none). */
async function section(heading: string): Promise<string> {
  const lines = (await readFile(README, 'utf8')).split('\n')
  const start = lines.indexOf(heading)
  expect(start, heading).toBeGreaterThan(-1)
  let fenced = false
  let end = start + 1
  for (; end < lines.length; end++) {
    const line = lines[end] ?? ''
    if (line.startsWith('```')) fenced = !fenced
    else if (!fenced && /^#{1,3} /.test(line)) break
  }
  return lines.slice(start, end).join('\n')
}

const agentSection = () => section('### Agent config (`deltaport.json`, zod-validated)')

/** The section's example document (the first ```json block). */
async function example(): Promise<Record<string, unknown>> {
  const json = /```json\n([\s\S]*?)\n```/.exec(await agentSection())?.[1] ?? ''
  return JSON.parse(json) as Record<string, unknown>
}

const schemaKeys = () => Object.keys(AgentConfig.shape)

describe('README Agent config', () => {
  it('names every key the agent accepts', async () => {
    const text = await agentSection()
    const missing = schemaKeys().filter((key) => !text.includes(`\`${key}\``) && !text.includes(`"${key}":`))
    expect(missing).toEqual([])
  })

  it('shows no key in its example that the agent would refuse', async () => {
    const unknown = Object.keys(await example()).filter((key) => !schemaKeys().includes(key))
    expect(unknown).toEqual([])
  })

  it("shows the schema's and the daemon's defaults in its example", async () => {
    const shown = await example()
    const defaults: Record<string, unknown> = {
      ...AgentConfig.parse({ edgeUrl: 'https://updates.example.com' }),
      // Optional in the schema (so older configs stay valid), defaulted by daemonSettings.
      metered: false,
      stagingBudgetBytes: DAEMON_DEFAULTS.stagingBudgetBytes,
      idleLoadPerCore: DAEMON_DEFAULTS.idleLoadPerCore,
      daemonIntervalSeconds: DAEMON_DEFAULTS.intervalSeconds,
    }
    // Keys with a default; the others (edgeUrl, keys, signingKey) are examples of what to fill in.
    const withDefault = Object.keys(shown).filter(
      (key) => key in defaults && !['edgeUrl', 'trustedKeys', 'indexKeys'].includes(key),
    )
    expect(Object.fromEntries(withDefault.map((key) => [key, shown[key]]))).toEqual(
      Object.fromEntries(withDefault.map((key) => [key, defaults[key]])),
    )
  })

  it("is matched by the package's README (client-agent/README.md), which devices' owners read", async () => {
    const text = await readFile(join(import.meta.dirname, '..', 'README.md'), 'utf8')
    // signingKey is a maintainer's (publish); the package's README is for devices.
    const missing = schemaKeys().filter(
      (key) => key !== 'signingKey' && !text.includes(`\`${key}\``) && !text.includes(`"${key}":`),
    )
    expect(missing).toEqual([])
    const keep = /`keepVersions` \([^)]*default (\d+)/.exec(text)?.[1]
    expect(Number(keep)).toBe(AgentConfig.parse({ edgeUrl: 'https://updates.example.com' }).keepVersions)
    const mib = /`minFreeBytes` \([^)]*default (\d+) MiB/.exec(text)?.[1]
    expect(Number(mib) * 1024 ** 2).toBe(DEFAULT_MIN_FREE_BYTES)
  })

  it('quotes the minFreeBytes default the install check uses', async () => {
    const mib = /`minFreeBytes` \(optional, default (\d+) MiB\)/.exec(await agentSection())?.[1]
    expect(Number(mib) * 1024 ** 2).toBe(DEFAULT_MIN_FREE_BYTES)
  })
})

describe('README swap settings', () => {
  // SwapSettings drops keys it does not know without a word: an example key the schema lost (renamed,
  // removed) would be copied into configs and silently do nothing.
  it('shows an example whose every key the schema reads, and which it accepts', async () => {
    const text = await section('## Running a service: buffered swap')
    const json = /Every field is optional:\n\n```json\n([\s\S]*?)\n```/.exec(text)?.[1] ?? ''
    const shown = JSON.parse(json) as Record<string, unknown>
    expect(Object.keys(shown).filter((key) => !(key in SwapSettings.shape))).toEqual([])
    expect(SwapSettings.safeParse(shown).error?.issues ?? []).toEqual([])
  })

  it('names every swap setting', async () => {
    const text = await section('## Running a service: buffered swap')
    expect(Object.keys(SwapSettings.shape).filter((key) => !text.includes(key))).toEqual([])
  })

  it('quotes the defaults SwapSettings has where its prose gives one ("`restartHoldMs` (10 s)")', async () => {
    const text = await section('## Running a service: buffered swap')
    const defaults = SwapSettings.parse({}) as Record<string, unknown>
    const unitMs: Record<string, number> = { ms: 1, s: 1000, min: 60_000, h: 3_600_000 }
    const quoted: [string, number][] = []
    for (const [, key = '', amount = '', unit] of text.matchAll(
      /`(\w+)` \(?(\d+(?:\.\d+)?)(?: ?(ms|s|min|h)\b)?/g,
    )) {
      if (typeof defaults[key] !== 'number') continue
      quoted.push([key, Number(amount) * (unit ? (unitMs[unit] ?? Number.NaN) : 1)])
    }
    expect(quoted.length).toBeGreaterThan(5)
    expect(quoted).toEqual(quoted.map(([key]) => [key, defaults[key]]))
  })
})
