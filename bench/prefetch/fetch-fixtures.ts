/**
 * One-off: resolves real dependency trees from the npm registry and stores them compactly as fixtures.
 * Run: node bench/prefetch/fetch-fixtures.ts   (network; the bench itself only reads the fixture)
 *
 * For each project a package.json is written to a temp dir and `npm install --package-lock-only
 * --ignore-scripts` resolves it (no tarballs are downloaded). From package-lock.json we keep one version
 * per package name (the hoisted one, `node_modules/<name>`), drop optional platform packages (os/cpu
 * specific binaries), and keep name-level dependency edges.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

interface ProjectSpec {
  name: string
  dependencies: Record<string, string>
  devDependencies?: Record<string, string>
}

const PROJECTS: ProjectSpec[] = [
  {
    name: 'express-api',
    dependencies: {
      express: '^4',
      cors: '^2',
      helmet: '^7',
      morgan: '^1',
      dotenv: '^16',
      jsonwebtoken: '^9',
      pg: '^8',
    },
  },
  {
    name: 'react-vite-app',
    dependencies: { react: '^18', 'react-dom': '^18' },
    devDependencies: {
      vite: '^5',
      '@vitejs/plugin-react': '^4',
      typescript: '^5',
      '@types/react': '^18',
      '@types/react-dom': '^18',
    },
  },
  {
    name: 'next-app',
    dependencies: { next: '^14', react: '^18', 'react-dom': '^18' },
    devDependencies: { typescript: '^5', '@types/node': '^20', '@types/react': '^18' },
  },
  {
    name: 'cli-tool',
    dependencies: { commander: '^12', chalk: '^5', ora: '^8', inquirer: '^9', 'fs-extra': '^11' },
  },
  {
    name: 'utility-lib',
    dependencies: { lodash: '^4', axios: '^1', 'date-fns': '^3', uuid: '^9', zod: '^3' },
  },
  {
    name: 'ts-tooling',
    dependencies: {},
    devDependencies: {
      typescript: '^5',
      eslint: '^8',
      '@typescript-eslint/parser': '^7',
      '@typescript-eslint/eslint-plugin': '^7',
      prettier: '^3',
    },
  },
  {
    name: 'webpack-babel-app',
    dependencies: {},
    devDependencies: {
      webpack: '^5',
      'webpack-cli': '^5',
      'babel-loader': '^9',
      '@babel/core': '^7',
      '@babel/preset-env': '^7',
    },
  },
]

interface LockEntry {
  version?: string
  optional?: boolean
  os?: string[]
  cpu?: string[]
  dependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  link?: boolean
}

export interface FixtureProject {
  name: string
  /** Direct dependencies of the project (dependencies + devDependencies). */
  roots: string[]
  /** `name@version`, one per package name. */
  packages: string[]
  /** [from, to] indices into `packages`: `from` depends on `to`. */
  edges: [number, number][]
}

const nameOf = (path: string) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length)

function resolve(spec: ProjectSpec): FixtureProject {
  const dir = mkdtempSync(join(tmpdir(), 'deltaport-fixture-'))
  try {
    writeFileSync(
      join(dir, 'package.json'),
      JSON.stringify({ version: '1.0.0', private: true, ...spec }, null, 2),
    )
    execFileSync(
      'npm',
      ['install', '--package-lock-only', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'],
      { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] },
    )
    const lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, LockEntry>
    }
    const hoisted = new Map<string, LockEntry>()
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === '' || entry.link === true || entry.version === undefined) continue
      if (entry.optional === true && (entry.os !== undefined || entry.cpu !== undefined)) continue
      const name = nameOf(path)
      // Only the hoisted copy: nested duplicates (other versions of the same name) are dropped.
      if (path === `node_modules/${name}`) hoisted.set(name, entry)
    }
    const names = [...hoisted.keys()].sort()
    const index = new Map(names.map((n, i) => [n, i]))
    const edges: [number, number][] = []
    for (const [name, entry] of hoisted) {
      const deps = { ...entry.dependencies, ...entry.optionalDependencies }
      for (const dep of Object.keys(deps).sort()) {
        const to = index.get(dep)
        if (to !== undefined) edges.push([index.get(name) ?? 0, to])
      }
    }
    edges.sort((a, b) => a[0] - b[0] || a[1] - b[1])
    const roots = Object.keys({ ...spec.dependencies, ...spec.devDependencies }).filter((n) => index.has(n))
    return {
      name: spec.name,
      roots: roots.sort(),
      packages: names.map((n) => `${n}@${hoisted.get(n)?.version}`),
      edges,
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const projects: FixtureProject[] = []
for (const spec of PROJECTS) {
  const p = resolve(spec)
  console.log(`${p.name}: ${p.packages.length} packages, ${p.edges.length} edges`)
  projects.push(p)
}
const out = join(import.meta.dirname, 'fixtures', 'projects.json')
writeFileSync(
  out,
  `${JSON.stringify({ resolvedAt: new Date().toISOString(), registry: 'https://registry.npmjs.org/', projects })}\n`,
)
console.log(`wrote ${out}`)
