/**
 * Builds the installable agent package into dist/agent/ (docs/decisions/0013-deploy-and-packaging.md):
 *
 *   deltaport.mjs            client-agent/bin/deltaport.ts bundled by esbuild with every runtime dependency
 *   apply-worker.mjs         client-agent/codec/apply-worker.ts, bundled the same way: the thread that
 *                            applies deltas off the agent's event loop (codec/off-thread-apply.ts)
 *   make-worker.mjs          client-agent/codec/make-worker.ts, likewise: the thread `delta make` runs
 *                            its in-memory make on, so a stop signal is not kept waiting (off-thread-make.ts)
 *   package.json             a small generated manifest: bin `deltaport`, no dependencies, engines node >= 22.12
 *   systemd/*.service        the units from client-agent/systemd/
 *   README.md                client-agent/README.md (install, config, units)
 *   THIRD_PARTY_LICENSES.md  the license text of every bundled package (they ship inside the .mjs files)
 *
 * Node strips TypeScript types only outside node_modules, so an installed package must be JavaScript.
 * Everything is bundled: the install needs no registry (air-gapped devices, mirrors), the device runs
 * exactly the lockfile's versions, and one file starts faster than a module graph.
 *
 * Usage: node scripts/build-agent.ts [--out dist/agent]   (npm run build:agent; `npm run pack:agent` packs it)
 */
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join, relative, resolve, sep } from 'node:path'
import { parseArgs } from 'node:util'
import { build, type Metafile } from 'esbuild'
import { z } from 'zod'

const ROOT = join(import.meta.dirname, '..')

const RootManifest = z.object({
  version: z.string().min(1),
  description: z.string().optional(),
  license: z.string().optional(),
  engines: z.object({ node: z.string() }),
})

const BundledManifest = z.object({
  name: z.string().min(1),
  version: z.string().min(1),
  license: z.string().optional(),
})

/** The published name; the repo's own package.json stays `private` (it is the edge, the benches, the tests). */
export const AGENT_PACKAGE_NAME = 'deltaport-agent'
/** The worker bundle's name; the agent finds it beside deltaport.mjs (client-agent/codec/off-thread-apply.ts). */
const APPLY_WORKER = 'apply-worker'
/** The delta-make worker's bundle (client-agent/codec/off-thread-make.ts), found the same way. */
const MAKE_WORKER = 'make-worker'

export interface AgentBuild {
  outDir: string
  version: string
  bundleBytes: number
  bundled: { name: string; version: string; license: string }[]
}

export async function buildAgent(outDir = join(ROOT, 'dist', 'agent')): Promise<AgentBuild> {
  const root = RootManifest.parse(JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')))
  await rm(outDir, { recursive: true, force: true })
  await mkdir(join(outDir, 'systemd'), { recursive: true })

  const result = await build({
    // Whole bundles rather than shared chunks: one file per thread to ship, each starting on its own.
    entryPoints: {
      deltaport: join(ROOT, 'client-agent', 'bin', 'deltaport.ts'),
      [APPLY_WORKER]: join(ROOT, 'client-agent', 'codec', 'apply-worker.ts'),
      [MAKE_WORKER]: join(ROOT, 'client-agent', 'codec', 'make-worker.ts'),
    },
    outdir: outDir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'esm',
    metafile: true,
    // Readable stack traces in bug reports matter more than ~40 % of a file that is downloaded once.
    minify: false,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'warning',
    define: {
      DELTAPORT_AGENT_VERSION: JSON.stringify(root.version),
      DELTAPORT_APPLY_WORKER: JSON.stringify(`./${APPLY_WORKER}.mjs`),
      DELTAPORT_MAKE_WORKER: JSON.stringify(`./${MAKE_WORKER}.mjs`),
    },
    // CommonJS dependencies (semver, pako) call require(); an ES module has none of its own. Then the
    // Node version check, before any of the agent runs.
    banner: {
      js: `import { createRequire as __deltaportCreateRequire } from 'node:module'\nconst require = __deltaportCreateRequire(import.meta.url)\n${nodeVersionCheck(root.engines.node)}`,
    },
  })

  const bundled = await bundledPackages(result.metafile)
  await writeFile(join(outDir, 'THIRD_PARTY_LICENSES.md'), await licenseNotices(bundled))
  await copyFile(join(ROOT, 'client-agent', 'README.md'), join(outDir, 'README.md'))
  for (const unit of await readdir(join(ROOT, 'client-agent', 'systemd'))) {
    if (unit.endsWith('.service')) {
      await copyFile(join(ROOT, 'client-agent', 'systemd', unit), join(outDir, 'systemd', unit))
    }
  }
  const manifest = {
    name: AGENT_PACKAGE_NAME,
    version: root.version,
    description:
      'deltaport device agent: installs, updates (by binary delta) and prefetches verified software',
    type: 'module',
    bin: { deltaport: 'deltaport.mjs' },
    files: [
      'deltaport.mjs',
      `${APPLY_WORKER}.mjs`,
      `${MAKE_WORKER}.mjs`,
      'systemd/',
      'README.md',
      'THIRD_PARTY_LICENSES.md',
    ],
    engines: root.engines,
    // No dependencies: everything the agent runs is inside its .mjs files.
    license: root.license ?? 'UNLICENSED',
  }
  await writeFile(join(outDir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`)
  const bundleBytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0)
  return { outDir, version: root.version, bundleBytes, bundled: bundled.map(({ dir: _, ...p }) => p) }
}

/**
 * The bundle's first statement: on a Node older than `engines` (`>=22.12`), a line saying so and exit 3
 * (a config error: the machine's, not the agent's). Without it a device on Node 20 (what many
 * distributions ship) got a SyntaxError naming a node:util export, or a feature failing mid-command.
 * It runs only if the bundle links there, so the agent imports Node 22's additions by namespace
 * (client-agent/errors.ts).
 */
export function nodeVersionCheck(engines: string): string {
  const floor = /^>=(\d+)\.(\d+)(?:\.\d+)?$/.exec(engines)
  if (!floor) throw new Error(`package.json engines.node must read ">=major.minor", not ${engines}`)
  const [major, minor] = [Number(floor[1]), Number(floor[2])]
  return [
    `{ const [major, minor] = process.versions.node.split('.').map(Number)`,
    `  if (major < ${major} || (major === ${major} && minor < ${minor})) {`,
    `    process.stderr.write(\`deltaport: needs Node.js ${major}.${minor} or newer; this is \${process.versions.node} (\${process.execPath})\\n\`)`,
    `    process.exit(3)`,
    `  } }`,
  ].join('\n')
}

interface BundledPackage {
  name: string
  version: string
  license: string
  dir: string
}

/** The node_modules packages esbuild actually put into the bundle, from its metafile. */
async function bundledPackages(metafile: Metafile): Promise<BundledPackage[]> {
  const dirs = new Set<string>()
  for (const input of Object.keys(metafile.inputs)) {
    const parts = input.split(/[\\/]/)
    const at = parts.lastIndexOf('node_modules')
    if (at < 0) continue
    const scoped = parts[at + 1]?.startsWith('@') ?? false
    dirs.add(join(ROOT, ...parts.slice(0, at + (scoped ? 3 : 2))))
  }
  const packages: BundledPackage[] = []
  for (const dir of [...dirs].sort()) {
    const manifest = BundledManifest.parse(JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')))
    packages.push({ ...manifest, license: manifest.license ?? 'see its repository', dir })
  }
  return packages
}

async function licenseNotices(packages: BundledPackage[]): Promise<string> {
  const sections = ['# Third-party software bundled in deltaport.mjs and its worker bundles\n']
  for (const p of packages) {
    const files = (await readdir(p.dir)).filter((f) => /^(licen[cs]e|copying|notice)/i.test(f)).sort()
    const texts = await Promise.all(files.map((f) => readFile(join(p.dir, f), 'utf8')))
    sections.push(
      `## ${p.name} ${p.version} (${p.license})\n\n${texts.map((t) => `\`\`\`\n${t.trim()}\n\`\`\``).join('\n\n') || 'No license file in the package.'}\n`,
    )
  }
  return sections.join('\n')
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { out: { type: 'string' } } })
  const built = await buildAgent(values.out ? resolve(values.out) : undefined)
  const where = relative(process.cwd(), built.outDir) || '.'
  // stderr: `npm pack --json` runs this as prepack and its stdout must stay one JSON document.
  console.error(
    `built ${AGENT_PACKAGE_NAME}@${built.version} in ${where}${sep}: ${(built.bundleBytes / 1024).toFixed(0)} KiB of .mjs, bundled ${built.bundled.map((p) => `${p.name}@${p.version}`).join(', ')}`,
  )
}

if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) {
  await main()
}
