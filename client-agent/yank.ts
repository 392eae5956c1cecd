import { YankResult } from '../schemas/yank.ts'
import { EdgeClient } from './edge-client.ts'
import { AgentError, errorFromResponse } from './errors.ts'
import { JSON_LIMITS, readJsonBounded } from './transfer/read-json.ts'

export interface YankRequest {
  edgeUrl: string
  token: string
  name: string
  version: string
  /** Why the release is pulled (shown to device owners); null restores a yanked version. */
  reason: string | null
  fetchImpl?: typeof fetch
}

/**
 * Pulls a published release (or restores it): the edge moves channel heads off it and aborts a rollout
 * of it; agents stop picking it. Nothing is signed here: a yank withdraws, it never grants anything.
 */
export async function setYank(request: YankRequest): Promise<YankResult> {
  const edge = new EdgeClient(request.edgeUrl, request.fetchImpl)
  const path = `/v1/publish/${encodeURIComponent(request.name)}/${request.version}/yank`
  const response = await edge.request(path, {
    method: request.reason === null ? 'DELETE' : 'PUT',
    headers: {
      authorization: `Bearer ${request.token}`,
      ...(request.reason === null ? {} : { 'content-type': 'application/json' }),
    },
    ...(request.reason === null ? {} : { body: JSON.stringify({ reason: request.reason }) }),
  })
  const what = `${request.reason === null ? 'restoring' : 'yanking'} ${request.name}@${request.version}`
  if (response.status !== 200) throw await errorFromResponse(response, what)
  const parsed = YankResult.safeParse(
    await readJsonBounded(response, JSON_LIMITS.index, `the result of ${what}`),
  )
  if (!parsed.success) throw new AgentError('edge-rejected', `the edge sent a malformed result of ${what}`)
  return parsed.data
}
