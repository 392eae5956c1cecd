import { YankResult } from '../schemas/yank.ts'
import { SignedYankStatement, type YankStatement } from '../schemas/yank-statement.ts'
import { EdgeClient } from './edge-client.ts'
import { AgentError } from './errors.ts'
import { type KeyFiles, readKeyFiles } from './publish.ts'
import { signDocumentByAll } from './signing.ts'
import { errorFromResponse } from './transfer/error-response.ts'
import { JSON_LIMITS, readJsonBounded } from './transfer/read-json.ts'
import { assertSignersSuffice, type SignerPolicy } from './trust.ts'

export interface YankRequest {
  edgeUrl: string
  token: string
  name: string
  version: string
  /** Why the release is pulled (shown to device owners); null restores a yanked version. */
  reason: string | null
  /**
   * The maintainer's signing key: the yank (or restore) is then signed, and agents running the version
   * move back to the one they ran before (ADR 0025). Without it devices are only warned.
   */
  keyFile?: KeyFiles
  /** How long devices act on the signed statement (default 30 days). */
  expiresDays?: number
  /** What devices need of the statement's signatures (the config's threshold, or its root's). */
  signers?: SignerPolicy
  fetchImpl?: typeof fetch
  now?: Date
}

const DAY_MS = 86_400_000
export const DEFAULT_STATEMENT_DAYS = 30

/**
 * Pulls a published release (or restores it): the edge moves channel heads off it and aborts a rollout
 * of it; agents stop picking it. With a key the statement is signed, which is what lets agents running
 * it move back; the edge only checks that the statement matches the request.
 */
export async function setYank(request: YankRequest): Promise<YankResult> {
  const edge = new EdgeClient(request.edgeUrl, request.fetchImpl)
  const path = `/v1/publish/${encodeURIComponent(request.name)}/${request.version}/yank`
  const statement = request.keyFile ? await signedStatement(edge, request, request.keyFile) : undefined
  const body =
    request.reason === null
      ? statement && { statement }
      : { reason: request.reason, ...(statement ? { statement } : {}) }
  const response = await edge.request(path, {
    method: request.reason === null ? 'DELETE' : 'PUT',
    headers: {
      authorization: `Bearer ${request.token}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  })
  const what = `${request.reason === null ? 'restoring' : 'yanking'} ${request.name}@${request.version}`
  if (response.status !== 200) throw await errorFromResponse(response, what)
  const parsed = YankResult.safeParse(
    await readJsonBounded(response, JSON_LIMITS.index, `the result of ${what}`),
  )
  if (!parsed.success) throw new AgentError('edge-rejected', `the edge sent a malformed result of ${what}`)
  return parsed.data
}

/**
 * The signed statement for this request, about the bytes the version's manifest names (a manifest the
 * edge misreports only yields a statement no device accepts: each compares it with its own copy).
 */
async function signedStatement(
  edge: EdgeClient,
  request: YankRequest,
  keyFile: KeyFiles,
): Promise<SignedYankStatement> {
  const keys = await readKeyFiles(keyFile)
  if (request.signers) assertSignersSuffice(keys, request.signers, 'devices would not act on the statement')
  const manifest = await edge.manifest(request.name, request.version)
  const now = request.now ?? new Date()
  const days = request.expiresDays ?? DEFAULT_STATEMENT_DAYS
  const statement: YankStatement = {
    _type: 'deltaport/yank',
    name: request.name,
    version: request.version,
    sha256: manifest.signed.sha256,
    yanked: request.reason !== null,
    reason: request.reason,
    at: now.toISOString(),
    expires: new Date(now.getTime() + days * DAY_MS).toISOString(),
  }
  return SignedYankStatement.parse(await signDocumentByAll(statement, keys))
}
