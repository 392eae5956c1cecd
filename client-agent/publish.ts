import { createHash } from 'node:crypto'
import { type FileHandle, open, readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import type { ArtifactIndex } from '../schemas/artifact-index.ts'
import { base64Bytes } from '../schemas/base64.ts'
import { Base64, Sha256Hex } from '../schemas/common.ts'
import { unusablePublicKeyProblem } from '../schemas/ed25519-public-key.ts'
import {
  type ArtifactManifest,
  type DependencyRef,
  MAX_SERIAL_STEP,
  SignedManifest,
} from '../schemas/manifest.ts'
import {
  MultipartCreated,
  type Published,
  Published as PublishedSchema,
  PublishStarted,
  UploadedPart,
} from '../schemas/publish.ts'
import { keyIdOf, meetsThreshold, type TrustedKey } from '../schemas/signed-envelope.ts'
import { EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import { regularFileSize } from './fs/file-io.ts'
import { abortOnStopSignals } from './fs/stop-signals.ts'
import {
  type DeltaInput,
  type PreparedDelta,
  prepareDelta,
  readArtifact,
  uploadAttachments,
} from './publish-attachments.ts'
import { AttemptJournal } from './publish-journal.ts'
import {
  backportRefused,
  channelsLostMeanwhile,
  nextSerial,
  SERIAL_ATTEMPTS,
  serialOvertaken,
  serialRetryDelayMs,
} from './publish-serial.ts'
import { isManifestOf, landedDespiteLostAnswer, type SettledPublish, settleRerun } from './publish-settled.ts'
import { type KeyPairFiles, signManifest } from './signing.ts'
import { errorFromResponse } from './transfer/error-response.ts'
import { HEADER_TIMEOUT_MS, PROGRESS_SLICE_BYTES } from './transfer/header-timeout.ts'
import { JSON_LIMITS } from './transfer/read-json.ts'
import { assertSignersSuffice, type SignerPolicy } from './trust.ts'

export const KeyFile = z.object({ keyid: Sha256Hex, publicKey: Base64, privateKey: Base64 })

export interface PublishRequest {
  edgeUrl: string
  token: string
  keyFile: KeyFiles
  file: string
  name: string
  version: string
  dependencies?: DependencyRef[]
  channels?: string[]
  mediaType?: string
  expiresInDays?: number
  /** Raw deltas from earlier versions to this one; listed in the signed manifest and uploaded first. */
  deltas?: DeltaInput[]
  /** Build and publish the content-defined chunk index (enables chunk-sync); default true. */
  chunkIndex?: boolean
  onProgress?: (sent: number, total: number) => void
  /** Lines worth telling the maintainer (a channel the version did not move, …). */
  onNotice?: (message: string) => void
  fetchImpl?: typeof fetch
  /** What devices need of the signatures (the config's threshold, or its root's): checked before anything. */
  signers?: SignerPolicy
  /**
   * Maintainer keys (besides the signing keys and a root's maintainers) whose manifests vouch for the
   * latest serial the edge reports (the config's trustedKeys): see assertSerialVouchedFor.
   */
  trustedKeys?: readonly TrustedKey[]
  /**
   * Where this machine keeps the names of attempts it staged until the edge has heard their fate
   * (publish-journal.ts): a rerun gives up what a killed run, or one cut off from the edge, left staged.
   * The CLI passes `<installRoot>/.publish`; without it nothing is kept.
   */
  attemptJournal?: string
  /** How long the edge may make no progress (take no upload bytes, send no answer); default 30 s. */
  stallMs?: number
}

/**
 * What a publish did: `settled` is set when it sent no commit that was answered, yet the version is
 * published as asked: `already-published` (a rerun of a publish done with the same bytes and
 * dependencies: nothing uploaded or signed) or `answer-lost` (this run's commit landed, its answer did
 * not reach the CLI: found in the index and the manifest it serves).
 */
export type PublishResult = Published & { settled?: SettledPublish['how'] }

/** One key file or several (each signs: thresholds, ADR 0035), each read and checked. */
export type KeyFiles = string | readonly string[]

export function readKeyFiles(paths: KeyFiles): Promise<KeyPairFiles[]> {
  const list = typeof paths === 'string' ? [paths] : paths
  if (list.length === 0) throw new AgentError('config', 'no signing key given')
  return Promise.all(list.map(readKeyFile))
}

export async function readKeyFile(path: string): Promise<KeyPairFiles> {
  let key: KeyPairFiles
  try {
    key = KeyFile.parse(JSON.parse(await readFile(path, 'utf8')))
  } catch {
    throw new AgentError(
      'config',
      `cannot read a deltaport key from ${path} (make one with \`deltaport keygen\`)`,
    )
  }
  // A keyid that is not its key's would sign documents no verifier can match to the key.
  const raw = base64Bytes(key.publicKey)
  if (!raw || unusablePublicKeyProblem(raw) !== null || (await keyIdOf(raw)) !== key.keyid)
    throw new AgentError('config', `${path}: its keyid is not the sha256 of its public key`)
  return key
}

/**
 * Hashes and signs locally (the private key never leaves this machine), stages the manifest at the
 * edge, uploads the deltas and chunk index it lists, then the bytes — one PUT when small, R2 multipart
 * when large. The edge publishes the version only after it has verified the bytes against the signed
 * size and sha256. A commit refused because another publish took the serial meanwhile is signed again
 * and retried without uploading anything again (publish-serial.ts).
 */
export async function publishArtifact(request: PublishRequest): Promise<PublishResult> {
  const edge = new EdgeClient(
    request.edgeUrl,
    request.fetchImpl,
    request.stallMs === undefined ? {} : { stallMs: request.stallMs },
  )
  const keys = await readKeyFiles(request.keyFile)
  if (request.signers)
    assertSignersSuffice(
      keys,
      request.signers,
      `${request.version} would be published for good and never install`,
    )
  const index = await edge.indexIfListed(request.name)
  const vouchers = [...keys, ...(request.signers?.rootMaintainers ?? []), ...(request.trustedKeys ?? [])]
  // Versions are immutable: a published one is either this very publish run again (the same bytes and
  // dependencies, signed by a trusted key: done, nothing sent) or refused, saying what differs. Hashed
  // only (no chunk index, no delta): nothing is built for a version that is not published again.
  const journal = request.attemptJournal
    ? new AttemptJournal(request.attemptJournal, request.edgeUrl, request.name, request.version)
    : null
  if (index?.versions.some((v) => v.version === request.version)) {
    // Published: whatever an earlier run left staged of it can never commit, nor hold the version.
    for (const leftover of (await journal?.leftovers()) ?? []) await leftover.remove()
    const { size, read } = await readWhole(request.file, false)
    const wanted = {
      name: request.name,
      version: request.version,
      size,
      sha256: read.sha256,
      dependencies: request.dependencies ?? [],
      channels: request.channels ?? ['stable'],
    }
    return reported(request, await settleRerun(edge, index, wanted, vouchers))
  }
  await assertSerialVouchedFor(edge, request.name, index, vouchers)
  // One read gives the sha256 the manifest signs and the chunk index it lists: both describe the same bytes.
  const { size, read } = await readWhole(request.file, request.chunkIndex !== false)
  const { sha256, chunks } = read
  // Deltas are built from the file before this: ones made for other bytes would not rebuild the signed ones.
  if ((request.deltas ?? []).some((d) => d.targetSha256 !== undefined && d.targetSha256 !== sha256))
    throw changedWhilePublishing(request.file)
  const deltas = await Promise.all((request.deltas ?? []).map(prepareDelta))
  const now = new Date()
  const manifest: ArtifactManifest = {
    schemaVersion: 1,
    name: request.name,
    version: request.version,
    size,
    sha256,
    mediaType: request.mediaType ?? guessMediaType(request.file),
    dependencies: request.dependencies ?? [],
    channels: request.channels ?? ['stable'],
    createdAt: now.toISOString(),
    expires: new Date(now.getTime() + (request.expiresInDays ?? 90) * 86_400_000).toISOString(),
    serial: (index?.latestSerial ?? 0) + 1,
    chunkIndex: chunks?.ref ?? null,
    deltas: deltas.map((d) => d.ref),
  }
  const publish: StagedPublish = {
    edge,
    journal,
    request,
    keys,
    vouchers,
    auth: { authorization: `Bearer ${request.token}` },
    base: `/v1/publish/${encodeURIComponent(request.name)}/${request.version}`,
    deltas,
    chunkIndex: chunks?.bytes ?? null,
    size,
    sha256,
  }
  // From here on the edge holds the version for this publish: SIGINT and SIGTERM (Ctrl-C) give it up
  // there before the process ends, or rerunning the publish would get 409 for 30 minutes (ADR 0022).
  const stop = abortOnStopSignals()
  let result: PublishResult | undefined
  try {
    await giveUpLeftovers(publish)
    const outcome = await commitWithFreshSerial(publish, manifest, index, stop.signal)
    if ('how' in outcome) {
      result = reported(request, outcome)
    } else {
      for (const note of channelNotes(outcome)) request.onNotice?.(note)
      result = outcome
    }
    return result
  } finally {
    // Kept only while the edge may still hold an attempt of this run that it was never told about.
    if (publish.gaveUp !== null) await journal?.clear().catch(() => undefined)
    // The stop ends the process by its signal (release), before any result or error is printed.
    if (stop.signal.aborted) request.onNotice?.(stoppedNote(publish, stop.signal.reason, result))
    await stop.release()
  }
}

/**
 * What a publish stopped by SIGINT or SIGTERM left, for the one line printed before the process ends:
 * published anyway (the stop came after the edge's answer), nothing published and nothing held, or an
 * attempt the edge could not be told about or would not give up.
 */
function stoppedNote(publish: StagedPublish, reason: unknown, result: PublishResult | undefined): string {
  const { name, version } = publish.request
  const stopped = reason instanceof Error ? reason.message : 'stopped'
  if (result) return `${stopped} after ${name}@${version} was published (serial ${result.serial})`
  if (publish.gaveUp === null)
    return `${stopped}: nothing was published, but the edge could not be told to give the attempt up: it holds ${name}@${version} for 30 minutes, unless the same publish is run again on this machine, which gives it up first`
  if (publish.gaveUp === undefined || publish.gaveUp === 204)
    return `${stopped}: nothing was published and nothing of it is left staged at the edge; run the publish again to start over`
  return `${stopped}: the edge would not give the attempt up (HTTP ${publish.gaveUp}: its commit may have been under way); run the same publish again, which says "already published" if it landed`
}

/**
 * Gives up, at the edge, the attempts of this publish that earlier runs on this machine staged and could
 * not give up themselves (publish-journal.ts): without it, the version stays held for 30 minutes after
 * a run killed mid-upload. An entry goes once the edge answered (204: given up; 409: another attempt
 * holds the version or it is published or committing, none of which is this run's to change); one the
 * edge could not be asked about stays for the next run.
 */
async function giveUpLeftovers(publish: StagedPublish): Promise<void> {
  const { request } = publish
  for (const { entry, remove } of (await publish.journal?.leftovers()) ?? []) {
    const answer = await abandon(publish, entry.attempt)
    if (answer === null) continue
    await remove()
    if (answer === 204)
      request.onNotice?.(
        `gave up the publish of ${request.name}@${request.version} that an earlier run (pid ${entry.pid}) left staged at the edge: it was killed, or stopped while the edge was out of reach`,
      )
  }
}

/** The artifact's size and one read of it (sha256, chunk index if asked); a file that changed size meanwhile is refused. */
async function readWhole(file: string, withChunkIndex: boolean) {
  const size = await regularFileSize(file)
  const read = await readArtifact(file, withChunkIndex)
  if (read.length !== size) throw changedWhilePublishing(file)
  return { size, read }
}

/** A settled publish's notes told, and its result. */
function reported(request: PublishRequest, settled: SettledPublish): PublishResult {
  for (const note of settled.notes) request.onNotice?.(note)
  return { ...settled.published, settled: settled.how }
}

/** Manifests read, newest serial first, looking for one that vouches for the edge's latest serial. */
const VOUCHER_LOOKUPS = 8

/**
 * Refuses to sign a serial far above what a maintainer vouched for. The serial signed is the edge's
 * latest + 1, and the edge is not trusted with integrity: one (or a man in the middle) reporting a
 * latest serial near 2^53 would have the maintainer sign a manifest no later release can ever follow,
 * bricking every device that installs it (a fast-forward without any stolen key). So the latest serial
 * must be carried by a listed version whose manifest a key of `vouchers` signed, or lie at most
 * MAX_SERIAL_STEP (the edge's own bound on one publish) above the newest such manifest among the
 * VOUCHER_LOOKUPS highest serials (0 when none: a history signed only by keys rotated out since, whose
 * serials honest publishes keep far below the step). `untrusted-index` otherwise, before anything is
 * signed.
 */
export async function assertSerialVouchedFor(
  edge: EdgeClient,
  name: string,
  index: ArtifactIndex | null,
  vouchers: readonly TrustedKey[],
): Promise<void> {
  const latest = index?.latestSerial ?? 0
  if (latest === 0) return
  const newest = [...(index?.versions ?? [])]
    .filter((v) => v.serial <= latest)
    .sort((a, b) => b.serial - a.serial)
    .slice(0, VOUCHER_LOOKUPS)
  let vouched = 0
  for (const entry of newest) {
    if (latest - entry.serial > MAX_SERIAL_STEP) break
    const envelope = await edge.manifest(name, entry.version)
    if (!isManifestOf(envelope, name, entry)) continue
    if (!(await meetsThreshold(envelope, vouchers, 1))) continue
    vouched = entry.serial
    break
  }
  if (latest - vouched <= MAX_SERIAL_STEP) return
  throw new AgentError(
    'untrusted-index',
    `the edge says the latest serial of ${name} is ${latest}, but no manifest signed by a key this maintainer trusts carries it or a serial within 2^32 of it (${vouched === 0 ? 'none found' : `the newest is ${vouched}`}); refusing to sign serial ${latest + 1}, which no later release could get above. Check the edge (a compromised edge or a man in the middle would say this), or list the signer of the latest release in trustedKeys`,
    { latestSerial: latest, vouchedSerial: vouched },
  )
}

/** What every attempt of one publish shares. */
interface StagedPublish {
  edge: EdgeClient
  /** Where the attempt staged is noted until the edge heard of it, or null (publish-journal.ts). */
  journal: AttemptJournal | null
  /**
   * The edge's answer to this run giving its attempt up (abandon): undefined when it never did, null when
   * the edge could not be told (its journal entry then stays).
   */
  gaveUp?: number | null
  request: PublishRequest
  keys: KeyPairFiles[]
  /** Whose manifests vouch for a latest serial (assertSerialVouchedFor). */
  vouchers: readonly TrustedKey[]
  auth: Record<string, string>
  /** `/v1/publish/<name>/<version>` */
  base: string
  deltas: PreparedDelta[]
  chunkIndex: Uint8Array | null
  /** Of the file as read and signed. */
  size: number
  sha256: string
}

/**
 * Signs `manifest`, stages it and uploads what it lists, which commits it. When another publish of the
 * artifact committed first and took the serial (409 `serial-overtaken`, at staging or at the commit),
 * the index is read again and the manifest signed again with a serial above the new latest; bytes
 * already uploaded stay at the edge and are committed as they are (`POST …/commit`). Bounded by
 * SERIAL_ATTEMPTS; refused for good when the version was published meanwhile or would now land as a
 * backport (channelsLostMeanwhile). Any other failure once staged (Ctrl-C included) gives the attempt
 * up at the edge, so the version is free at once: a single PUT cut off mid-body never reaches the
 * edge's own cleanup, and a staged manifest nobody will commit would hold the version for 30 minutes.
 */
async function commitWithFreshSerial(
  publish: StagedPublish,
  manifest: ArtifactManifest,
  atStart: ArtifactIndex | null,
  signal: AbortSignal,
): Promise<Published | SettledPublish> {
  const { edge, request } = publish
  const { name, version } = manifest
  let serial = manifest.serial
  // Set once the bytes (and with them the deltas and chunk index) are stored at the edge.
  let uploaded = false
  for (let attempt = 1; ; attempt++) {
    const envelope = SignedManifest.parse(await signManifest({ ...manifest, serial }, publish.keys))
    let staged: PublishStarted | undefined
    // Whether the edge may hold this envelope staged: from the moment the POST is sent, unless the edge
    // answered it with a refusal (4xx: nothing was staged by it).
    let mayBeStaged = false
    try {
      // Best effort: a journal that cannot be written only loses the rerun's give-up.
      await publish.journal?.record(attemptOf(envelope)).catch(() => undefined)
      mayBeStaged = true
      staged = await stage(publish, envelope, signal).catch((error: unknown) => {
        if (error instanceof AgentError && refusedAtStaging(error)) mayBeStaged = false
        throw error
      })
      const response = uploaded ? await commitStored(publish, signal) : await upload(publish, staged, signal)
      if (response.status === 201) return await publishedAnswer(edge, response, name, version)
      const what = `${uploaded ? 'committing' : 'uploading'} ${name}@${version}`
      const error = await errorFromResponse(response, what)
      // Refused at its commit, which comes after the bytes were stored.
      if (serialOvertaken(error)) uploaded = true
      throw error
    } catch (error) {
      // A refused serial dropped the staged manifest at the edge already: signed again below.
      const signAgain = serialOvertaken(error) && attempt < SERIAL_ATTEMPTS
      // The commit may have landed though its answer did not (the Worker died after writing the index,
      // or the connection broke): the index and the manifest the edge serves say so. Only after staging
      // succeeded (nothing is published otherwise) and for failures that are not refusals.
      if (staged !== undefined && answerMayBeLost(error) && !signal.aborted) {
        const landed = await landedDespiteLostAnswer(edge, envelope, manifest.channels, publish.vouchers)
        if (landed) return landed
      }
      if (!signAgain) {
        // Anything else gives the attempt up, so the version is free at once. Also when the answer to
        // the POST was lost after the edge staged the envelope: the attempt's name is the sha256 of the
        // envelope as staged, which the CLI has (attemptOf), and only the holder of that exact
        // envelope can name it (a staged manifest is never served).
        if (mayBeStaged) publish.gaveUp = await abandon(publish, staged?.attempt ?? attemptOf(envelope))
        throw error
      }
    }
    await sleep(serialRetryDelayMs(attempt), undefined, { signal }).catch(() => signal.throwIfAborted())
    const current = await edge.indexIfListed(name)
    if (current?.versions.some((v) => v.version === version)) throw alreadyPublished(name, version)
    const lost = channelsLostMeanwhile(version, manifest.channels, atStart, current)
    if (lost.length > 0) throw backportRefused(name, version, lost)
    await assertSerialVouchedFor(edge, name, current, publish.vouchers)
    serial = nextSerial(current, serial)
    request.onNotice?.(
      `another publish of ${name} took serial ${serial - 1} first; signing ${version} again with serial ${serial}`,
    )
  }
}

/**
 * The edge's 201 to the upload (or commit) that published the version. The version is published once
 * the edge sent that status, so an answer that breaks off or is not the expected JSON says so: the
 * maintainer should look before publishing the same version again (it would be refused as immutable).
 */
async function publishedAnswer(
  edge: EdgeClient,
  response: Response,
  name: string,
  version: string,
): Promise<Published> {
  try {
    return await edge.readParsed(
      response,
      PublishedSchema,
      JSON_LIMITS.maintainer,
      `the answer to publishing ${name}@${version}`,
    )
  } catch (error) {
    if (!(error instanceof AgentError)) throw error
    throw new AgentError(
      error.code,
      `${error.message}; the edge answered 201, so ${name}@${version} is most likely published (running the same publish again says so before it sends anything)`,
      { ...error.details, likelyPublished: true },
    )
  }
}

/**
 * A failure that is no refusal by the edge: the connection broke (or the answer did), the edge (or a
 * proxy before it) answered 5xx, or the 201 arrived but its body did not (publishedAnswer).
 */
function answerMayBeLost(error: unknown): boolean {
  if (!(error instanceof AgentError)) return false
  if (error.code === 'network' || error.details?.likelyPublished === true) return true
  const status = error.details?.status
  return typeof status === 'number' && status >= 500
}

/** POSTs the signed manifest; the edge answers with how to upload and the attempt's name. */
async function stage(
  publish: StagedPublish,
  envelope: SignedManifest,
  signal: AbortSignal,
): Promise<PublishStarted> {
  const { name, version } = envelope.signed
  const started = await publish.edge.request(publish.base, {
    method: 'POST',
    headers: { ...publish.auth, 'content-type': 'application/json' },
    body: JSON.stringify(envelope),
    signal,
  })
  if (started.status !== 201) throw await errorFromResponse(started, `starting publish of ${name}@${version}`)
  return publish.edge.readParsed(
    started,
    PublishStarted,
    JSON_LIMITS.maintainer,
    `the answer to staging ${name}@${version}`,
  )
}

/**
 * The name the edge gives the attempt staging `envelope` (its answer's `attempt`): the sha256 of the
 * envelope exactly as staged, which is the envelope as parsed and serialized, the very bytes POSTed
 * (workers/publish/pending-manifest.ts, attemptOf). Known without the answer, so an attempt whose
 * staging answer was lost can still be given up.
 */
export function attemptOf(envelope: SignedManifest): string {
  return createHash('sha256').update(JSON.stringify(envelope)).digest('hex')
}

/** The edge answered the staging POST with a refusal (a 4xx status): it staged nothing for it. */
function refusedAtStaging(error: AgentError): boolean {
  const status = error.details?.status
  return typeof status === 'number' && status >= 400 && status < 500
}

/** Uploads the deltas, the chunk index and the bytes of the staged attempt; the last upload commits. */
async function upload(
  publish: StagedPublish,
  staged: PublishStarted,
  signal: AbortSignal,
): Promise<Response> {
  const { edge, base, auth } = publish
  await uploadAttachments(edge, base, auth, publish.deltas, publish.chunkIndex, signal)
  return publish.size <= staged.maxSinglePutBytes
    ? await putWhole(publish, signal)
    : await putMultipart(publish, staged.partBytes, signal)
}

/** Commits a re-signed manifest against the bytes, deltas and chunk index its refused attempt stored. */
function commitStored(publish: StagedPublish, signal: AbortSignal): Promise<Response> {
  return publish.edge.request(`${publish.base}/commit`, { method: 'POST', headers: publish.auth, signal })
}

/**
 * Gives the staged attempt up at the edge (`DELETE …/attempts/:attempt`), best effort: not bound to the
 * stop signal (it runs after one). The edge's status, or null when it could not be asked (a link that
 * is down leaves the version held until the staged manifest counts as abandoned, or until a rerun on
 * this machine gives it up from the journal). The edge never touches a published version here.
 */
async function abandon(publish: StagedPublish, attempt: string): Promise<number | null> {
  return publish.edge
    .request(`${publish.base}/attempts/${attempt}`, {
      method: 'DELETE',
      headers: publish.auth,
      signal: AbortSignal.timeout(10_000),
    })
    .then(async (response) => {
      await response.body?.cancel().catch(() => undefined)
      // A 5xx (an edge or proxy fault) told the edge nothing for sure.
      return response.status >= 500 ? null : response.status
    })
    .catch(() => null)
}

/**
 * The edge's refusal of an already published version, as the publish would meet it at its first
 * request (same code, exit status and wording), raised before any delta or chunk index is built.
 */
export function alreadyPublished(name: string, version: string): AgentError {
  return new AgentError(
    'edge-rejected',
    `starting publish of ${name}@${version}: HTTP 409: ${name}@${version} is already published; versions are immutable`,
    { status: 409 },
  )
}

/** One line per channel the edge left on its higher head (heads only move up in semver). */
export function channelNotes(published: Published): string[] {
  const { name, version } = published
  return (published.channelsNotMoved ?? []).map(
    ({ channel, head }) =>
      `channel ${channel} not moved: it stays on ${head}, a higher version than ${version} ` +
      `(${version} is published; install it with \`deltaport install ${name}@${version}\`)`,
  )
}

/** The artifact's index, or null when nothing of it is published yet. */

/**
 * The file changed after publish read it: the bytes it would upload are not the ones it signed. Nothing is
 * published (the edge verifies the sha256) and the version is left free, so running the publish again
 * once the file is final goes through at once.
 */
function changedWhilePublishing(file: string): AgentError {
  return new AgentError(
    'integrity-mismatch',
    `${file} changed while it was being published (its bytes no longer match the sha256 signed at the start); nothing was published: run the publish again once the file is final`,
    { path: file },
  )
}

/** Bytes read per step of a single-PUT upload. */
const UPLOAD_CHUNK_BYTES = 1024 * 1024

/**
 * `length` bytes of the file from `offset`, zero-filled past its end: an upload always sends exactly the
 * Content-Length it announced. A file that shrank then gives bytes that fail the sha256 check, which the
 * edge answers with a clean refusal that frees the version; a body cut short would instead break the
 * connection, and the version would be free again only once the CLI gives its attempt up (abandon).
 */
async function readAt(file: FileHandle, offset: number, length: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(length)
  let filled = 0
  while (filled < length) {
    const { bytesRead } = await file.read(buffer, filled, length - filled, offset + filled)
    if (bytesRead === 0) break
    filled += bytesRead
  }
  return buffer
}

/**
 * The single-PUT upload: exactly `size` bytes from the start of the file (what was hashed and signed,
 * unless the file changed since), hashed as they go. If the edge refuses them and they were not the
 * signed bytes, the file changed: said in those words rather than as the edge's sha256 mismatch.
 */
async function putWhole(publish: StagedPublish, signal: AbortSignal): Promise<Response> {
  const { edge, auth, request, size, sha256 } = publish
  const file = await open(request.file, 'r')
  const hash = createHash('sha256')
  let sent = 0
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          if (sent >= size) {
            controller.close()
            return
          }
          const chunk = await readAt(file, sent, Math.min(UPLOAD_CHUNK_BYTES, size - sent))
          hash.update(chunk)
          sent += chunk.length
          request.onProgress?.(sent, size)
          // In small slices: each one the connection takes restarts the stall timer (header-timeout.ts).
          for (let at = 0; at < chunk.length; at += PROGRESS_SLICE_BYTES)
            controller.enqueue(chunk.subarray(at, at + PROGRESS_SLICE_BYTES))
        } catch (error) {
          controller.error(error)
        }
      },
      // Nothing is read ahead of the request taking it.
    },
    { highWaterMark: 0 },
  )
  try {
    const response = await edge.request(`${publish.base}/blob`, {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(size), 'content-type': 'application/octet-stream' },
      body,
      duplex: 'half',
      signal,
    } as RequestInit)
    if (response.status !== 201 && sent === size && hash.digest('hex') !== sha256) {
      await response.body?.cancel().catch(() => undefined)
      throw changedWhilePublishing(request.file)
    }
    return response
  } finally {
    await file.close()
  }
}

/**
 * The multipart upload: parts of exactly the planned sizes, hashed as they go. Bytes that are not the
 * signed ones (the file changed) are never completed: the upload is aborted, which frees the version.
 * So is an upload stopped by SIGINT or SIGTERM (Ctrl-C, `signal`): without that, the staged publish
 * would hold the version until it counts as abandoned (30 minutes, ADR 0022) and running the publish
 * again would get 409. publishArtifact then ends the process by the same signal, as it would have.
 */
async function putMultipart(
  publish: StagedPublish,
  partBytes: number,
  signal: AbortSignal,
): Promise<Response> {
  const { edge, base, auth, request, size, sha256 } = publish
  const created = await edge.request(`${base}/uploads`, { method: 'POST', headers: auth, signal })
  if (created.status !== 201) throw await errorFromResponse(created, 'starting multipart upload')
  const { uploadId } = await edge.readParsed(
    created,
    MultipartCreated,
    JSON_LIMITS.maintainer,
    'the answer to starting a multipart upload',
  )
  const uploadPath = `${base}/uploads/${encodeURIComponent(uploadId)}`
  const file = await open(request.file, 'r')
  try {
    const parts: UploadedPart[] = []
    const hash = createHash('sha256')
    for (let offset = 0, partNumber = 1; offset < size; offset += partBytes, partNumber++) {
      const length = Math.min(partBytes, size - offset)
      const buffer = await readAt(file, offset, length)
      hash.update(buffer)
      signal.throwIfAborted()
      const response = await edge.request(`${uploadPath}/parts/${partNumber}`, {
        method: 'PUT',
        // fetch sets Content-Length for byte bodies (undici refuses a hand-set one next to them); the
        // stall timer follows the bytes as they go (header-timeout.ts).
        headers: auth,
        body: buffer,
        signal,
      })
      if (!response.ok) throw await errorFromResponse(response, `uploading part ${partNumber}`)
      parts.push(
        await edge.readParsed(
          response,
          UploadedPart,
          JSON_LIMITS.maintainer,
          `the answer to uploading part ${partNumber}`,
        ),
      )
      request.onProgress?.(offset + length, size)
    }
    if (hash.digest('hex') !== sha256) throw changedWhilePublishing(request.file)
    signal.throwIfAborted()
    // The edge answers once it has copied the whole upload into place and verified it: time that grows
    // with the artifact and sends nothing, which the stall timer alone would take for a dead edge.
    const completing = new EdgeClient(edge.baseUrl, request.fetchImpl, {
      stallMs: (request.stallMs ?? HEADER_TIMEOUT_MS) + Math.ceil((size / COMPLETE_BYTES_PER_SECOND) * 1000),
    })
    return await completing.request(`${uploadPath}/complete`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ parts }),
    })
  } catch (error) {
    // Leave nothing half-uploaded at the edge; aborting the upload also frees the version.
    await edge
      .request(uploadPath, { method: 'DELETE', headers: auth, signal: AbortSignal.timeout(10_000) })
      .catch(() => undefined)
    throw error
  } finally {
    await file.close()
  }
}

/** The slowest rate at which the edge is expected to copy and verify a completed upload. */
const COMPLETE_BYTES_PER_SECOND = 4 * 1024 * 1024

function guessMediaType(file: string): string {
  if (/\.(tgz|tar\.gz)$/.test(file)) return 'application/gzip'
  if (file.endsWith('.zip')) return 'application/zip'
  if (file.endsWith('.tar')) return 'application/x-tar'
  return 'application/octet-stream'
}
