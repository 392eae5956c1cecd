import { open, stat } from 'node:fs/promises'
import type { z } from 'zod'
import { base64Bytes } from '../schemas/base64.ts'
import { unusablePublicKeyProblem } from '../schemas/ed25519-public-key.ts'
import { MAX_SIGNATURES } from '../schemas/manifest.ts'
import { MAX_ROOT_BYTES, MAX_ROOT_KEYS, RootStatement, SignedRoot } from '../schemas/root.ts'
import {
  nextRootProblem,
  roleKeys,
  roleThreshold,
  rootDigest,
  selfSignedProblem,
} from '../schemas/root-chain.ts'
import { canonicalJson, keyIdOf, meetsThreshold, type TrustedKey } from '../schemas/signed-envelope.ts'
import { EdgeClient, rootPath } from './edge-client.ts'
import { AgentError, namingPath } from './errors.ts'
import { writeFileAtomic } from './fs/atomic.ts'
import { readKeyFile } from './publish.ts'
import { type KeyPairFiles, signDocument } from './signing.ts'
import { errorFromResponse } from './transfer/error-response.ts'

/**
 * The maintainer's side of root metadata (ADR 0035): drafting a root, collecting its signatures (one
 * key holder after another when a threshold asks for several), checking it the way devices and the
 * edge will (schemas/root-chain.ts), publishing it and reading back what the edge serves.
 * `deltaport root …` (commands/root.ts) is a thin layer over this.
 */

const DAY_MS = 86_400_000

/** Most signatures one envelope carries (schemas/manifest.ts signedEnvelope). */
export const MAX_ROOT_SIGNATURES = 8

/** Why `text` is not a public key as `deltaport keygen` prints it (raw 32-byte Ed25519, base64), or null. */
export function publicKeyProblem(text: string): string | null {
  const raw = /^[A-Za-z0-9+/]+={0,2}$/.test(text) ? base64Bytes(text) : null
  if (!raw) return `"${text}" is not base64`
  const problem = unusablePublicKeyProblem(raw)
  return problem ? `"${text}" ${problem} (use the publicKey \`deltaport keygen\` prints)` : null
}

/** A role's keys as given on the command line: replace the role's keys, its threshold, or both. */
export interface RoleChange {
  /** Public keys (base64 raw); unset keeps the `--from` root's keys for the role. */
  publicKeys?: readonly string[]
  threshold?: number
}

export interface RootDraft {
  /** Unset: one above the `--from` root (required without one). */
  version?: number
  expiresDays: number
  root?: RoleChange
  maintainers?: RoleChange
  /** The edge's index key(s); unset keeps the `--from` root's (or leaves the role out). */
  index?: { publicKeys: readonly string[] }
  now?: Date
}

/** The role names as flags: what error messages point the maintainer at. */
const ROLE_FLAGS = { root: '--root-key', maintainers: '--maintainer-key', index: '--index-key' } as const
const THRESHOLD_FLAGS = { root: '--root-threshold', maintainers: '--maintainer-threshold' } as const

/**
 * The root statement a draft describes, on its own or from `base` (rotation: the base's keys, roles and
 * thresholds, the roles given replaced, one version up). Keys no role names any more are dropped, so
 * a revoked key leaves the document entirely. Validated with the schema devices use.
 */
export async function draftRoot(draft: RootDraft, base?: RootStatement): Promise<RootStatement> {
  const version = draft.version ?? (base ? base.version + 1 : undefined)
  if (version === undefined)
    throw new AgentError('usage', 'a new root needs --version (or --from <root.json>)')
  const keys: Record<string, { publicKey: string }> = {}

  const roleKeyids = async (role: keyof typeof ROLE_FLAGS, given: readonly string[] | undefined) => {
    if (given === undefined) {
      const kept = base?.roles[role]?.keyids ?? []
      for (const keyid of kept) {
        const entry = base?.keys[keyid]
        if (entry) keys[keyid] = { publicKey: entry.publicKey }
      }
      return kept
    }
    if (given.length === 0) throw new AgentError('usage', `${ROLE_FLAGS[role]} needs at least one key`)
    const keyids: string[] = []
    for (const publicKey of given) {
      const problem = publicKeyProblem(publicKey)
      if (problem) throw new AgentError('usage', `${ROLE_FLAGS[role]}: ${problem}`)
      const keyid = await keyIdOf(base64Bytes(publicKey) ?? new Uint8Array())
      if (keyids.includes(keyid))
        throw new AgentError('usage', `${ROLE_FLAGS[role]} ${publicKey} is given twice`)
      keyids.push(keyid)
      keys[keyid] = { publicKey }
    }
    return keyids
  }

  const thresholdRole = async (role: keyof typeof THRESHOLD_FLAGS, change: RoleChange | undefined) => {
    const keyids = await roleKeyids(role, change?.publicKeys)
    if (keyids.length === 0)
      throw new AgentError('usage', `a root needs ${ROLE_FLAGS[role]} (or --from a root to keep its keys)`)
    const threshold = change?.threshold ?? base?.roles[role].threshold ?? 1
    if (threshold > keyids.length) {
      const origin =
        change?.threshold === undefined && base
          ? `root ${base.version}'s ${role} threshold ${threshold}`
          : `${THRESHOLD_FLAGS[role]} ${threshold}`
      throw new AgentError(
        'usage',
        `${origin} is above the ${keyids.length} ${role} key(s): pass ${THRESHOLD_FLAGS[role]} (at most ${keyids.length}) or more ${ROLE_FLAGS[role]}`,
      )
    }
    if (threshold > MAX_SIGNATURES) {
      const what = role === 'root' ? 'root' : 'manifest or yank statement'
      throw new AgentError(
        'usage',
        `${THRESHOLD_FLAGS[role]} ${threshold} is above ${MAX_SIGNATURES}, the most signatures a signed document carries: no ${what} could ever meet it`,
      )
    }
    return { keyids, threshold }
  }

  const root = await thresholdRole('root', draft.root)
  if (base) assertRotationSignable(base, version, root)
  const maintainers = await thresholdRole('maintainers', draft.maintainers)
  const indexKeyids = await roleKeyids('index', draft.index?.publicKeys)
  const now = draft.now ?? new Date()
  const statement = {
    _type: 'deltaport/root' as const,
    version,
    expires: new Date(now.getTime() + draft.expiresDays * DAY_MS).toISOString(),
    keys,
    roles: { root, maintainers, ...(indexKeyids.length > 0 ? { index: { keyids: indexKeyids } } : {}) },
  }
  const parsed = RootStatement.safeParse(statement)
  if (!parsed.success)
    throw new AgentError('usage', `that root would be invalid: ${issuesOf(parsed.error)}`, {
      keys: Object.keys(keys).length,
      maxKeys: MAX_ROOT_KEYS,
    })
  return parsed.data
}

/**
 * A next root is signed in one envelope by `threshold` of its own root keys and by the base root's root
 * threshold of its keys; a key in both roles counts for both. When that takes more signatures than an
 * envelope carries, the root could never be accepted by a device that holds the base.
 */
function assertRotationSignable(
  base: RootStatement,
  version: number,
  root: { keyids: string[]; threshold: number },
) {
  const before = base.roles.root
  const shared = root.keyids.filter((keyid) => before.keyids.includes(keyid)).length
  const needed = before.threshold + root.threshold - Math.min(shared, before.threshold, root.threshold)
  if (needed <= MAX_SIGNATURES) return
  throw new AgentError(
    'usage',
    `root ${version} would need ${needed} signatures (${before.threshold} by root ${base.version}'s root keys and ${root.threshold} by its own, ${shared} key(s) in both), above ${MAX_SIGNATURES}, the most a signed document carries: keep more of root ${base.version}'s root keys or lower --root-threshold, and rotate in steps`,
  )
}

/** A maintainer key file (`deltaport keygen`, read by publish's readKeyFile) and where it came from. */
export interface SigningKey extends KeyPairFiles {
  file: string
}

export async function readSigningKeys(files: readonly string[]): Promise<SigningKey[]> {
  if (files.length === 0)
    throw new AgentError('usage', 'sign with at least one key: --key <file> (a root needs a signature)')
  return Promise.all(files.map(async (file) => ({ ...(await readKeyFile(file)), file })))
}

/**
 * `envelope` with a signature by each key added, replacing an earlier signature by the same key (a
 * re-sign after the statement changed, or the same key given twice). Each new signature is checked
 * against the key's public half, so a key file whose halves do not belong together fails here, not on
 * every device.
 */
export async function addSignatures(
  envelope: { signed: RootStatement; signatures: SignedRoot['signatures'] },
  keys: readonly SigningKey[],
): Promise<SignedRoot> {
  let signatures = [...envelope.signatures]
  for (const key of keys) {
    const signed = await signDocument(envelope.signed, key)
    const [signature] = signed.signatures
    if (!signature || !(await meetsThreshold(signed, [key], 1)))
      throw new AgentError('config', `${key.file}: its private key does not match its public key`)
    signatures = [...signatures.filter((s) => s.keyid !== key.keyid), signature]
  }
  if (signatures.length > MAX_ROOT_SIGNATURES)
    throw new AgentError(
      'usage',
      `a root carries at most ${MAX_ROOT_SIGNATURES} signatures; this one would have ${signatures.length}`,
    )
  return SignedRoot.parse({ signed: envelope.signed, signatures })
}

/**
 * A root document from a file: refused unread past MAX_ROOT_BYTES (what the edge and devices accept),
 * and refused unless it is a SignedRoot.
 */
export async function readRootFile(path: string): Promise<SignedRoot> {
  const tooBig = () =>
    new AgentError('untrusted-root', `${path} is over ${MAX_ROOT_BYTES} bytes, larger than any root may be`, {
      path,
      maxBytes: MAX_ROOT_BYTES,
    })
  const bytes = await readAtMost(path, MAX_ROOT_BYTES + 1)
  if (bytes.length > MAX_ROOT_BYTES) throw tooBig()
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch {
    throw new AgentError('untrusted-root', `${path} is not JSON`, { path })
  }
  const parsed = SignedRoot.safeParse(json)
  if (!parsed.success)
    throw new AgentError(
      'untrusted-root',
      `${path} is not a signed deltaport root: ${issuesOf(parsed.error)}`,
      { path },
    )
  return parsed.data
}

/** Up to `max` bytes of a regular file: a huge (or endless) one is never read whole. */
export async function readAtMost(path: string, max: number): Promise<Uint8Array> {
  const handle = await namingPath(path, open(path, 'r'))
  try {
    if (!(await handle.stat()).isFile()) throw new AgentError('io', `${path} is not a regular file`, { path })
    const buffer = new Uint8Array(max)
    let length = 0
    while (length < max) {
      const { bytesRead } = await namingPath(path, handle.read(buffer, length, max - length, length))
      if (bytesRead === 0) break
      length += bytesRead
    }
    return buffer.subarray(0, length)
  } finally {
    await handle.close()
  }
}

/**
 * Writes a root document atomically (temp, fsync, rename): a reader or a crash sees the old file or
 * the new one. `create` never replaces a file (it may be the last copy of a published root).
 */
export async function writeRootFile(path: string, root: SignedRoot, replace: boolean): Promise<void> {
  const text = `${JSON.stringify(root, null, 2)}\n`
  const size = new TextEncoder().encode(text).length
  if (size > MAX_ROOT_BYTES)
    throw new AgentError('usage', `that root is ${size} bytes, over the ${MAX_ROOT_BYTES} a root may be`)
  const exists = await stat(path).then(
    () => true,
    () => false,
  )
  if (exists && !replace)
    throw new AgentError(
      'config',
      `${path} already exists; root create never replaces a file (root sign adds signatures)`,
      { path },
    )
  await writeFileAtomic(path, text)
}

/** What the commands print about a root (`--json`: as is). */
export interface RootReport {
  file?: string
  version: number
  expires: string
  expired: boolean
  roles: {
    root: { keyids: string[]; threshold: number }
    maintainers: { keyids: string[]; threshold: number }
    index?: { keyids: string[] }
  }
  /**
   * sha256 of the statement's canonical JSON (signatures left out): for root 1, what the edge pins with
   * `MAINTAINER_KEYS=root:<digest>` to take its maintainers from this chain.
   */
  digest: string
  /** Keyids with a valid signature on it: keys it lists, or root keys of the root before it when known. */
  signedBy: string[]
  /**
   * Why a device (and the edge) would not take it yet: too few signatures by its own root keys, or,
   * when the root before it is known, by that one's; a version that does not follow; expiry.
   */
  problems: string[]
}

/** The report on `root`: signatures checked against its own keys and, when given, `previous`'s root keys. */
export async function reportOn(
  root: SignedRoot,
  options: { previous?: RootStatement; now?: Date; file?: string } = {},
): Promise<RootReport> {
  const now = options.now ?? new Date()
  const expired = Date.parse(root.signed.expires) <= now.getTime()
  const known: TrustedKey[] = [
    ...Object.entries(root.signed.keys).map(([keyid, { publicKey }]) => ({ keyid, publicKey })),
    ...(options.previous ? roleKeys(options.previous, 'root') : []),
  ]
  const signedBy: string[] = []
  for (const signature of root.signatures) {
    if (signedBy.includes(signature.keyid)) continue
    const keys = known.filter((k) => k.keyid === signature.keyid)
    if (await meetsThreshold({ signed: root.signed, signatures: [signature] }, keys, 1))
      signedBy.push(signature.keyid)
  }
  const problems = [
    await selfSignedProblem(root),
    options.previous ? await nextRootProblem(options.previous, root) : null,
    expired ? `root ${root.signed.version} expired at ${root.signed.expires}` : null,
  ].filter((p): p is string => p !== null)
  const { index } = root.signed.roles
  return {
    ...(options.file === undefined ? {} : { file: options.file }),
    version: root.signed.version,
    expires: root.signed.expires,
    expired,
    roles: {
      root: { keyids: root.signed.roles.root.keyids, threshold: roleThreshold(root.signed, 'root') },
      maintainers: {
        keyids: root.signed.roles.maintainers.keyids,
        threshold: roleThreshold(root.signed, 'maintainers'),
      },
      ...(index ? { index: { keyids: index.keyids } } : {}),
    },
    digest: await rootDigest(root.signed),
    signedBy,
    problems: [...new Set(problems)],
  }
}

/** A report as lines for a terminal: each role's keyids (marked when they signed) and threshold. */
export function describeReport(report: RootReport): string {
  const signed = new Set(report.signedBy)
  const keyLine = (keyid: string) => `    ${keyid}${signed.has(keyid) ? '  (signed)' : ''}`
  const { root, maintainers, index } = report.roles
  const others = report.signedBy.filter(
    (k) => !root.keyids.includes(k) && !maintainers.keyids.includes(k) && !index?.keyids.includes(k),
  )
  return [
    `root ${report.version}${report.file ? ` (${report.file})` : ''}, expires ${report.expires}${report.expired ? ' (EXPIRED)' : ''}`,
    `  root keys, ${root.threshold} of ${root.keyids.length} must sign the next root:`,
    ...root.keyids.map(keyLine),
    `  maintainer keys, ${maintainers.threshold} of ${maintainers.keyids.length} must sign a manifest or yank:`,
    ...maintainers.keyids.map(keyLine),
    ...(index ? ['  index keys (the edge signs alone):', ...index.keyids.map(keyLine)] : []),
    ...(others.length > 0 ? ['  also signed by (previous root keys):', ...others.map(keyLine)] : []),
    report.version === 1
      ? `  digest ${report.digest} (the edge pins it: MAINTAINER_KEYS=root:${report.digest})`
      : `  digest ${report.digest}`,
    ...report.problems.map((p) => `  problem: ${p}`),
  ].join('\n')
}

export interface CreateRootRequest extends RootDraft {
  /** An existing root to start from (rotation); it must stand on its own (self-signed). */
  from?: string
  keyFiles: readonly string[]
  out: string
}

/**
 * `root create`: drafts the root, signs it with every key given, writes it. Signing keys must be root
 * keys of the new root or of the `--from` root: no one else's signature counts towards a root. Too few
 * signatures is no error (other key holders add theirs with `root sign`); the report says what is
 * still missing.
 */
export async function createRoot(request: CreateRootRequest): Promise<RootReport> {
  const keys = await readSigningKeys(request.keyFiles)
  const base = request.from === undefined ? undefined : await readRootFile(request.from)
  if (base) {
    const problem = await selfSignedProblem(base)
    if (problem)
      throw new AgentError(
        'untrusted-root',
        `--from ${request.from}: ${problem}; start from a root that verifies`,
      )
  }
  const statement = await draftRoot(request, base?.signed)
  const signers = new Set([...statement.roles.root.keyids, ...(base ? base.signed.roles.root.keyids : [])])
  const stranger = keys.find((k) => !signers.has(k.keyid))
  if (stranger)
    throw new AgentError(
      'usage',
      `${stranger.file} (keyid ${stranger.keyid}) is not a root key of root ${statement.version}${base ? ` or of root ${base.signed.version}` : ''}: its signature would count for nothing`,
    )
  const signed = await addSignatures({ signed: statement, signatures: [] }, keys)
  await writeRootFile(request.out, signed, false)
  return reportOn(signed, {
    ...(base ? { previous: base.signed } : {}),
    file: request.out,
    ...nowOf(request),
  })
}

export interface SignRootRequest {
  file: string
  keyFiles: readonly string[]
  now?: Date
}

/**
 * `root sign`: adds (or renews) a signature per key and rewrites the file atomically. A key that is not
 * one of its root keys is allowed (a root key of the root before it signs a rotation) but reported.
 */
export async function signRootFile(
  request: SignRootRequest,
): Promise<{ report: RootReport; added: string[]; notOwnRootKeys: string[] }> {
  const keys = await readSigningKeys(request.keyFiles)
  const root = await readRootFile(request.file)
  const signed = await addSignatures(root, keys)
  await writeRootFile(request.file, signed, true)
  const own = new Set(root.signed.roles.root.keyids)
  return {
    report: await reportOn(signed, { file: request.file, ...nowOf(request) }),
    added: [...new Set(keys.map((k) => k.keyid))],
    notOwnRootKeys: [...new Set(keys.filter((k) => !own.has(k.keyid)).map((k) => k.keyid))],
  }
}

/** `root verify`: the report on a file, with `previous` when given; the caller fails on problems. */
export async function verifyRootFile(request: {
  file: string
  previous?: string
  now?: Date
}): Promise<RootReport> {
  const root = await readRootFile(request.file)
  const previous = request.previous === undefined ? undefined : await readRootFile(request.previous)
  return reportOn(root, {
    file: request.file,
    ...(previous ? { previous: previous.signed } : {}),
    ...nowOf(request),
  })
}

/** The AgentError for a report with problems (`root verify`, `root publish`). */
export function untrustedRoot(report: RootReport, context: string): AgentError {
  return new AgentError('untrusted-root', `${context}: ${report.problems.join('; ')}`, {
    version: report.version,
    problems: report.problems,
  })
}

export interface PublishRootRequest {
  edgeUrl: string
  token: string
  file: string
  now?: Date
  fetchImpl?: typeof fetch
}

/**
 * `root publish`: checks the root as devices will (standing on its own, not expired, and following the
 * edge's root one version down) so a mistake is named before the upload, then PUTs it. The edge
 * checks the chain again (it is the one that must refuse); a root already stored with the same bytes
 * is no error, so a publish that lost its answer can be run again.
 */
export async function publishRoot(
  request: PublishRootRequest,
): Promise<{ report: RootReport; created: boolean }> {
  const root = await readRootFile(request.file)
  const { version } = root.signed
  // What the file alone shows first: no round trip to learn it lacks its own signatures.
  const alone = await reportOn(root, { file: request.file, ...nowOf(request) })
  if (alone.problems.length > 0) throw untrustedRoot(alone, `not publishing ${request.file}`)
  const edge = new EdgeClient(request.edgeUrl, request.fetchImpl)
  let previous: SignedRoot | undefined
  if (version > 1) {
    const served = await edge.root(version - 1)
    if (!served)
      throw new AgentError(
        'not-found',
        `the edge has no root ${version - 1}: publish root ${version - 1} before root ${version}`,
        { version },
      )
    previous = served
  }
  const report = await reportOn(root, {
    file: request.file,
    ...(previous ? { previous: previous.signed } : {}),
    ...nowOf(request),
  })
  if (report.problems.length > 0)
    throw untrustedRoot(
      report,
      `not publishing ${request.file}${previous ? ` (after the edge's root ${version - 1})` : ''}`,
    )
  const response = await edge.request(rootPath(version), {
    method: 'PUT',
    headers: { authorization: `Bearer ${request.token}`, 'content-type': 'application/json' },
    // Canonical: the same root sent again is the same bytes however its file was formatted.
    body: canonicalJson(root),
  })
  if (response.status === 201 || response.status === 200) {
    await response.body?.cancel().catch(() => undefined)
    return { report, created: response.status === 201 }
  }
  const error = await errorFromResponse(response, `publishing root ${version}`)
  // The edge's own chain check refused it: the same verdict as a device's, so the same code.
  if (response.status === 422) throw new AgentError('untrusted-root', error.message, error.details)
  throw error
}

/** `root show`: the edge's root `version`, or its latest; not-found when it has none. */
export async function edgeRoot(request: {
  edgeUrl: string
  version?: number
  now?: Date
  fetchImpl?: typeof fetch
}): Promise<{ report: RootReport; document: SignedRoot }> {
  const edge = new EdgeClient(request.edgeUrl, request.fetchImpl)
  const document = request.version === undefined ? await edge.latestRoot() : await edge.root(request.version)
  if (!document)
    throw new AgentError(
      'not-found',
      request.version === undefined
        ? 'the edge has no root yet (deltaport root create, then root publish)'
        : `the edge has no root ${request.version}`,
      request.version === undefined ? {} : { version: request.version },
    )
  return { report: await reportOn(document, nowOf(request)), document }
}

function nowOf(request: { now?: Date }): { now?: Date } {
  return request.now ? { now: request.now } : {}
}

function issuesOf(error: z.ZodError): string {
  return error.issues
    .map((i) => (i.path.length > 0 ? `${i.path.map(String).join('.')}: ${i.message}` : i.message))
    .join('; ')
}
