/**
 * `npm run demo`: the main job end to end on the local embedded edge. Starts `wrangler dev`, publishes
 * two consecutive versions of a real npm package with the `deltaport` CLI (the second with a delta from
 * the first), installs the first, updates to the second by delta, verifies what is installed byte for byte, prints what happened and stops the edge.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { z } from 'zod'
import { formatBytes } from '../output.ts'
import { startWranglerDev } from './local-wrangler.ts'

const exec = promisify(execFile)
const ROOT = join(import.meta.dirname, '..', '..')
const WORK = join(ROOT, '.deltaport-demo')
const BIN = join(ROOT, 'client-agent', 'bin', 'deltaport.ts')
const TOKEN = 'demo-publish-token'
const PACKAGE = 'lodash'
const VERSIONS = ['4.17.20', '4.17.21'] as const

async function main(): Promise<void> {
  await rm(WORK, { recursive: true, force: true })
  await mkdir(join(WORK, 'packs'), { recursive: true })
  step(`fetching ${PACKAGE}@${VERSIONS.join(' and @')} from the npm registry`)
  const artifacts = await fetchArtifacts()

  const config = join(WORK, 'deltaport.json')
  const keyFile = join(WORK, 'maintainer.key.json')
  const { keyid, publicKey } = await cli(config, ['keygen', '--out', keyFile])
  if (!keyid || !publicKey) throw new Error('deltaport keygen printed no key')
  // The edge's own key, which signs short-lived index statements (ADR 0032); the device pins its public half.
  const indexKeyFile = join(WORK, 'edge-index.key.json')
  const indexKey = await cli(config, ['keygen', '--out', indexKeyFile])
  if (!indexKey.keyid || !indexKey.publicKey) throw new Error('deltaport keygen printed no key')
  const { privateKey } = KeyFile.parse(JSON.parse(await readFile(indexKeyFile, 'utf8')))
  const log: string[] = []
  step(
    'starting the local edge (wrangler dev): it accepts only manifests signed by the maintainer key and signs every index it serves',
  )
  const edge = await startWranglerDev({
    persistTo: join(WORK, 'edge-state'),
    token: TOKEN,
    maintainerKeys: publicKey,
    indexSigningKey: privateKey,
    log,
  })
  console.log(`   edge at ${edge.url}`)
  try {
    await writeFile(
      config,
      JSON.stringify(
        {
          edgeUrl: edge.url,
          trustedKeys: [{ keyid, publicKey }],
          indexKeys: [{ keyid: indexKey.keyid, publicKey: indexKey.publicKey }],
          installRoot: './device-store',
          signingKey: './maintainer.key.json',
        },
        null,
        2,
      ),
    )
    step('maintainer: publish both versions (signed manifests; the second with a delta from the first)')
    for (const [i, version] of VERSIONS.entries()) {
      const out = await cli(config, ['publish', artifacts[i]!, '--name', PACKAGE, '--version', version])
      console.log(
        `   published ${PACKAGE}@${version}: ${formatBytes(out.published?.size ?? 0)}, serial ${out.published?.serial}`,
      )
      for (const d of out.deltas ?? [])
        console.log(`     + delta from ${d.from} via ${d.method}: ${formatBytes(d.size)}`)
    }
    step(`device: install ${PACKAGE}@${VERSIONS[0]}`)
    const first = await cli(config, ['install', `${PACKAGE}@${VERSIONS[0]}`])
    console.log(`   ${describeInstall(first.install)}`)
    step(
      `device: update ${PACKAGE} to the stable channel head (plan → delta stream with FEC → apply → verify)`,
    )
    const second = await cli(config, ['update', PACKAGE])
    console.log(`   ${describeInstall(second.install)}`)

    const status = (await cli(config, ['status', PACKAGE])).status
    if (!status) throw new Error('the CLI printed no status')
    const installed = await readFile(join(status.currentPath, 'blob'))
    const expected = await readFile(artifacts[1]!)
    const same = sha256(installed) === sha256(expected)
    step('verify')
    console.log(`   current = ${status.current}, previous kept for rollback = ${status.previous}`)
    console.log(
      `   installed bytes ${same ? 'match' : 'DO NOT match'} the published ${PACKAGE}@${VERSIONS[1]} (sha256 ${sha256(installed).slice(0, 16)}…)`,
    )
    if (!same) throw new Error('installed artifact differs from the published one')
    if (second.install?.method === 'full') throw new Error('the update did not use a delta')
    console.log(
      '\ndemo finished: publish (signed, with deltas) → install → update by delta (from a freshly signed index) → verified atomic switch',
    )
  } catch (error) {
    console.error(`\nedge log:\n${log.join('').slice(-4000)}`)
    throw error
  } finally {
    await edge.stop()
  }
}

function describeInstall(install: z.infer<typeof InstallOut> | undefined): string {
  if (!install) throw new Error('the CLI printed no install result')
  const saved = install.size > 0 ? (1 - install.bytesDownloaded / install.size) * 100 : 0
  return `now at ${install.version} via ${install.method}: downloaded ${formatBytes(install.bytesDownloaded)} for a ${formatBytes(install.size)} artifact (${saved.toFixed(1)} % saved)${install.previous ? `, was ${install.previous}` : ''}`
}

/** Real artifacts from the npm registry; a deterministic synthetic pair only if it cannot be reached. */
async function fetchArtifacts(): Promise<string[]> {
  const dest = join(WORK, 'packs')
  try {
    await exec(
      'npm',
      ['pack', ...VERSIONS.map((v) => `${PACKAGE}@${v}`), '--pack-destination', dest, '--silent'],
      {
        timeout: 120_000,
      },
    )
    const files = (await readdir(dest)).filter((f) => f.endsWith('.tgz')).sort()
    if (files.length === 2) return files.map((f) => join(dest, f))
  } catch (error) {
    console.log(
      `   npm registry unreachable (${(error as Error).message.split('\n')[0]}); using a synthetic pair`,
    )
  }
  const base = createHash('sha256')
  const v1 = Buffer.alloc(1 << 20)
  for (let i = 0; i < v1.length; i += 32) base.copy().update(String(i)).digest().copy(v1, i)
  const v2 = Buffer.concat([v1.subarray(0, 500_000), Buffer.from('a small change'), v1.subarray(500_000)])
  const paths = [join(dest, 'synthetic-1.bin'), join(dest, 'synthetic-2.bin')]
  await writeFile(paths[0]!, v1)
  await writeFile(paths[1]!, v2)
  return paths
}

const InstallOut = z.object({
  version: z.string(),
  method: z.string(),
  bytesDownloaded: z.number(),
  size: z.number(),
  previous: z.string().nullable(),
})
/** The key file `deltaport keygen --out` writes; the demo hands its private key to the local edge. */
const KeyFile = z.object({ privateKey: z.string().min(1) })
/** The shapes of `deltaport --json` output the demo reads; parsed, like any other input. */
const CliOut = z.object({
  keyid: z.string().optional(),
  publicKey: z.string().optional(),
  published: z.object({ size: z.number(), serial: z.number() }).optional(),
  deltas: z.array(z.object({ from: z.string(), method: z.string(), size: z.number() })).optional(),
  install: InstallOut.optional(),
  status: z
    .object({ current: z.string().nullable(), previous: z.string().nullable(), currentPath: z.string() })
    .optional(),
})

async function cli(config: string, args: string[]): Promise<z.infer<typeof CliOut>> {
  const { stdout } = await exec(process.execPath, [BIN, '--config', config, '--json', ...args], {
    env: { ...process.env, DELTAPORT_TOKEN: TOKEN },
    cwd: WORK,
    maxBuffer: 64 * 1024 * 1024,
  }).catch((error: { stdout?: string; message: string }) => {
    throw new Error(`deltaport ${args.join(' ')} failed: ${error.stdout || error.message}`)
  })
  return CliOut.parse(JSON.parse(stdout))
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

function step(text: string): void {
  console.log(`\n== ${text}`)
}

await main()
