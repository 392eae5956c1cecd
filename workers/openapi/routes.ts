import { z } from 'zod'
import { ClientId, RegionName } from '../../schemas/client.ts'
import { ArtifactName, ByteSize, ChannelName, Sha256Hex, Version } from '../../schemas/common.ts'
import { DeltaFraming } from '../../schemas/delta-stream.ts'
import * as schemas from '../../schemas/index.ts'
import { DeltaMethod } from '../../schemas/manifest.ts'
import { MAX_PARTS } from '../../schemas/publish.ts'

/**
 * The route registry behind GET /openapi.json: one entry per (method, path) the Hono app serves.
 * workers/test/openapi.test.ts fails when a route of the app is missing here (or listed but gone).
 */

/** Response bodies that have no schema in schemas/ (built inline by their handlers). */
const ServiceInfo = z.object({ service: z.string(), api: z.string() })
const DeltaUploaded = DeltaFraming.extend({
  name: ArtifactName,
  from: Version,
  to: Version,
  method: DeltaMethod,
})
const ChunkIndexUploaded = z.object({
  name: ArtifactName,
  version: Version,
  size: ByteSize,
  sha256: Sha256Hex,
  chunkCount: z.number().int().nonnegative(),
})
/** A rejected document's issue or an accepted one's warning: where, and what about it. */
const ConfigRemark = z.object({ path: z.string(), message: z.string() })
const RuntimeConfigStatus = z.object({
  inForce: schemas.RuntimeConfig,
  source: z.enum(['kv', 'last-good', 'defaults']),
  lastRejected: z
    .object({
      at: z.string(),
      issues: z.array(ConfigRemark),
    })
    .nullable(),
  /** Values of the config in force that the edge ignores or overrides (it is in force all the same). */
  warnings: z.array(ConfigRemark),
})

/** Everything published under components/schemas; routes refer to these by name. */
export const COMPONENT_SCHEMAS = {
  ServiceInfo,
  ArtifactIndex: schemas.ArtifactIndex,
  ServedIndex: schemas.ServedIndex,
  ArtifactManifest: schemas.ArtifactManifest,
  SignedManifest: schemas.SignedManifest,
  PublishStarted: schemas.PublishStarted,
  Published: schemas.Published,
  MultipartCreated: schemas.MultipartCreated,
  UploadedPart: schemas.UploadedPart,
  CompleteMultipart: schemas.CompleteMultipart,
  DeltaFraming,
  DeltaUploaded,
  ChunkIndexUploaded,
  PlanRequest: schemas.PlanRequest,
  PlanResponse: schemas.PlanResponse,
  TelemetryBatch: schemas.TelemetryBatch,
  TelemetryReceipt: schemas.TelemetryReceipt,
  ServedPrefetchQueue: schemas.ServedPrefetchQueue,
  RuntimeConfig: schemas.RuntimeConfig,
  RuntimeConfigStatus,
  ManifestResigned: schemas.ManifestResigned,
  YankRequest: schemas.YankRequest,
  RestoreRequest: schemas.RestoreRequest,
  YankResult: schemas.YankResult,
  SignedRoot: schemas.SignedRoot,
  ProblemDetails: schemas.ProblemDetails,
  RolloutStartRequest: schemas.RolloutStartRequest,
  RolloutControlRequest: schemas.RolloutControlRequest,
  RolloutStatus: schemas.RolloutStatus,
  ServedRolloutCheck: schemas.ServedRolloutCheck,
  RolloutOutcome: schemas.RolloutOutcome,
  OutcomeReceipt: schemas.OutcomeReceipt,
  ShardPlan: schemas.ShardPlan,
  ShardMetrics: schemas.ShardMetrics,
  MigrationList: schemas.MigrationList,
  ReplanResult: schemas.ReplanResult,
  EnrollmentCodeRequest: schemas.EnrollmentCodeRequest,
  EnrollmentCodeCreated: schemas.EnrollmentCodeCreated,
  EnrollmentCodeInfo: schemas.EnrollmentCodeInfo,
  EnrollmentCodeList: schemas.EnrollmentCodeList,
  EnrollRequest: schemas.EnrollRequest,
  DeviceEnrollment: schemas.DeviceEnrollment,
  DeviceInfo: schemas.DeviceInfo,
  DeviceList: schemas.DeviceList,
} satisfies Record<string, z.ZodType>

export type ComponentName = keyof typeof COMPONENT_SCHEMAS

export type HttpMethod = 'get' | 'head' | 'post' | 'put' | 'delete'

export interface ParamSpec {
  name: string
  in: 'path' | 'query' | 'header'
  schema: z.ZodType
  required?: boolean
  description?: string
}

export type BodySpec =
  | { kind: 'json'; schema: ComponentName; contentType?: string; description?: string }
  | { kind: 'binary'; contentType: string; description?: string }

export interface ResponseSpec {
  description: string
  body?: BodySpec
  /** Response headers worth documenting (name → description). */
  headers?: Record<string, string>
}

export interface RouteSpec {
  method: HttpMethod
  /** OpenAPI form: `{param}`. */
  path: string
  operationId: string
  summary: string
  description?: string
  tag: string
  /** Maintainer/operator routes need the PUBLISH_TOKEN bearer token. */
  auth?: 'bearer'
  parameters?: ParamSpec[]
  requestBody?: BodySpec
  /** The request body may be left out (DELETE …/yank takes an optional signed restore). */
  bodyOptional?: boolean
  /** Success and special statuses; error statuses go in `problems`. */
  responses: Record<string, ResponseSpec>
  /** Error statuses answered with application/problem+json (a `default` one is always added). */
  problems?: number[]
  /**
   * False for the few routes that read no R2, KV or Durable Object: every other one can answer 503 +
   * Retry-After for a fault of its backing service (guarded-bucket.ts, transient.ts), which the
   * document adds on its own.
   */
  backed?: false
}

const nameParam: ParamSpec = {
  name: 'name',
  in: 'path',
  schema: ArtifactName,
  description: 'Artifact name; a scoped name travels as one segment (`@scope%2Fname`).',
}
const versionParam: ParamSpec = { name: 'version', in: 'path', schema: Version }
const uploadIdParam: ParamSpec = { name: 'uploadId', in: 'path', schema: z.string().min(1).max(1024) }
const contentLengthParam: ParamSpec = {
  name: 'content-length',
  in: 'header',
  schema: z.string().regex(/^\d{1,16}$/),
  required: true,
  description:
    'Uploads need a Content-Length (411 without one). The body must be exactly that long: one that ends short or runs past it is a 400 `body-length-mismatch`, one that breaks off a 400 `request-body-incomplete` (nothing stored, no Retry-After). The body is stored as sent: a `Content-Encoding` other than `identity` is a 415 with `Accept-Encoding: identity`.',
}
/** Conditional and range request headers of the immutable object routes (workers/http/serve-object.ts). */
const rangeParams: ParamSpec[] = [
  { name: 'range', in: 'header', schema: z.string(), description: 'A single byte range: `bytes=start-end`.' },
  {
    name: 'if-range',
    in: 'header',
    schema: z.string(),
    description: 'Strong ETag; ranges apply only if it matches.',
  },
  { name: 'if-none-match', in: 'header', schema: z.string(), description: 'ETag list; 304 on a match.' },
  {
    name: 'if-match',
    in: 'header',
    schema: z.string(),
    description: 'ETag list (strong comparison) or `*`; 412 when it does not name the object.',
  },
]

function rangedResponses(contentType: string, what: string, headers: Record<string, string> = {}) {
  const common = { etag: 'Strong validator', 'accept-ranges': 'Always `bytes`', ...headers }
  return {
    '200': { description: what, body: { kind: 'binary', contentType } as const, headers: common },
    '206': {
      description: `One byte range of ${what.toLowerCase()}`,
      body: { kind: 'binary', contentType } as const,
      headers: { ...common, 'content-range': '`bytes start-end/size`' },
    },
    '304': { description: 'Not modified (If-None-Match matched)', headers: common },
  } satisfies Record<string, ResponseSpec>
}

/**
 * HEAD twins of ranged GETs: same parameters and headers, no bodies, and no range answers (206, 416): a
 * HEAD ignores Range and If-Range (RFC 9110 §14.2 defines range handling for GET only).
 */
function headOf(get: RouteSpec): RouteSpec {
  const responses: Record<string, ResponseSpec> = {}
  for (const [status, response] of Object.entries(get.responses)) {
    if (status === '206') continue
    responses[status] = response.headers
      ? { description: response.description, headers: response.headers }
      : { description: response.description }
  }
  return {
    ...get,
    method: 'head',
    operationId: `${get.operationId}Head`,
    summary: `${get.summary} (headers only)`,
    description: `${get.description ? `${get.description} ` : ''}Range and If-Range are ignored: the answer is the whole object's.`,
    parameters: get.parameters?.filter((param) => param.name !== 'range' && param.name !== 'if-range'),
    responses,
    problems: get.problems?.filter((status) => status !== 416),
  }
}

const getBlob: RouteSpec = {
  method: 'get',
  path: '/v1/artifacts/{name}/{version}/blob',
  operationId: 'getArtifactBlob',
  summary: 'Download the full artifact bytes',
  description:
    "Immutable; served with the manifest's media type, edge-cached, with single-range support. Read from the " +
    "request's zone replica when the shard plan has a verified one there, else from the primary bucket " +
    '(`x-deltaport-zone: <zone>; source=replica|primary|cache`).',
  tag: 'artifacts',
  parameters: [nameParam, versionParam, ...rangeParams],
  responses: rangedResponses('application/octet-stream', 'The artifact bytes'),
  problems: [400, 404, 412, 416],
}

const getChunks: RouteSpec = {
  method: 'get',
  path: '/v1/artifacts/{name}/{version}/chunks',
  operationId: 'getArtifactChunkIndex',
  summary: 'Download the chunk index of a version (docs/formats/chunk-index.md)',
  tag: 'artifacts',
  parameters: [nameParam, versionParam, ...rangeParams],
  responses: rangedResponses('application/vnd.deltaport.chunk-index', 'The chunk index'),
  problems: [400, 404, 412, 416],
}

const getDelta: RouteSpec = {
  method: 'get',
  path: '/v1/deltas/{name}/{from}/{to}',
  operationId: 'getDelta',
  summary: 'Download a framed delta stream from one version to another',
  description:
    'The cheapest delta the target manifest lists (or of `method`); small unlisted pairs are generated on first request (503 + Retry-After while generating, and `object-replaced` when such a delta was made again twice while being read).',
  tag: 'deltas',
  parameters: [
    nameParam,
    { name: 'from', in: 'path', schema: Version },
    { name: 'to', in: 'path', schema: Version },
    { name: 'method', in: 'query', schema: DeltaMethod, required: false },
    {
      name: 'v',
      in: 'query',
      schema: z.string().max(128),
      required: false,
      description:
        'The stream a plan named (`<payload sha256>.<block size>.<k>.<m>`, part of the URL a plan hands out): 404 when the delta was made again with other bytes since, so the edge cache never mixes two streams under one URL. Without it, a lazily made delta is answered `Cache-Control: public, no-cache, no-transform` (revalidate by ETag) and not edge-cached; every other answer is `public, max-age=31536000, immutable, no-transform`.',
    },
    ...rangeParams,
  ],
  responses: rangedResponses('application/vnd.deltaport.stream', 'The framed delta stream', {
    'x-deltaport-block-size': 'Framing block size',
    'x-deltaport-fec': '`k=<data>;m=<parity>`',
    'x-deltaport-framed-length': 'Framed stream length',
    'x-deltaport-payload-length': 'Raw delta payload length',
    'x-deltaport-payload-sha256': 'sha256 of the raw payload',
    'x-deltaport-method': 'Delta method',
    'x-deltaport-generated': '`publisher` (listed in the signed manifest) or `lazy`',
  }),
  problems: [400, 404, 412, 416, 422, 503],
}

/** The edge's own signature check of maintainer documents (workers/publish/maintainer-keys.ts, ADR 0031). */
const MAINTAINER_SIGNED =
  'When the edge has `MAINTAINER_KEYS`, the signed document must carry a valid Ed25519 signature by one of ' +
  "its keys or, when it pins a root (`root:<digest>`), the newest root's maintainer threshold (422 " +
  '`untrusted-signature` otherwise, before anything is stored); blank, it is stored unchecked and only ' +
  'devices verify it.'

/** Yanks and restores: the signature rule, and the runtime switch that makes a statement mandatory. */
const YANK_SIGNED =
  `${MAINTAINER_SIGNED} With runtime config \`yank.requireStatement\`, a request without a statement is ` +
  'refused (422 `untrusted-signature`) before anything changes.'

/** Rollout control: plain or signed (workers/publish/rollout-control.ts, ADR 0038). */
const ROLLOUT_SIGNED =
  'The body is the request itself, or `{ "statement": SignedRolloutControlStatement }` whose `request` is ' +
  'that body as JSON text, for this name, channel and action, signed at most an hour ahead and valid at ' +
  'most a day (422 `invalid-statement` otherwise). ' +
  `${MAINTAINER_SIGNED} The rollout takes each statement once: one signed no later than the last it acted ` +
  'on is a 409. With runtime config `rollout.requireStatement`, a request without a statement is refused ' +
  '(422 `untrusted-signature`) before anything changes.'

/** Device credentials on reports and prefetch queries (workers/devices/authenticate.ts, ADR 0026). */
const DEVICE_AUTH =
  'Optional `Authorization: Device <credential>` (POST /v1/devices/enroll): the device id replaces the ' +
  'client id in the request; an invalid, expired or revoked credential is a 401, and the runtime config ' +
  '`devices.requireCredential` can make the credential mandatory (401 without one). A credential signed ' +
  'with a key being rotated out is accepted and answered with `x-deltaport-credential: renew`.'

export const ROUTES: RouteSpec[] = [
  {
    method: 'get',
    path: '/',
    operationId: 'getServiceInfo',
    summary: 'Service name and API root',
    tag: 'meta',
    backed: false,
    responses: { '200': { description: 'Service info', body: { kind: 'json', schema: 'ServiceInfo' } } },
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'getOpenApi',
    summary: 'This API description (OpenAPI 3.1)',
    tag: 'meta',
    backed: false,
    parameters: [
      { name: 'if-none-match', in: 'header', schema: z.string(), description: 'ETag list; 304 on a match.' },
    ],
    responses: {
      '200': {
        description: 'The OpenAPI document (`max-age=300`)',
        headers: { etag: 'Validator of this document (changes with a deploy that changes it)' },
      },
      '304': { description: 'Not modified (If-None-Match matched)', headers: { etag: 'Validator' } },
    },
  },
  {
    method: 'get',
    path: '/v1/artifacts/{name}',
    operationId: 'getArtifactIndex',
    summary: "An artifact's index: versions and channel heads",
    description:
      "With the edge's INDEX_SIGNING_KEY set, the index carries `statement`: the edge's Ed25519 signature over the index's sha256 (canonical JSON without `statement`), its latestSerial and an expiry (runtime config `index.statementTtlSeconds`, a day by default). Devices that list the key in `indexKeys` refuse an index without a fresh statement (freeze defence, ADR 0032).",
    tag: 'artifacts',
    parameters: [
      nameParam,
      { name: 'if-none-match', in: 'header', schema: z.string(), description: 'ETag list; 304 on a match.' },
    ],
    responses: {
      '200': {
        description: 'The index, signed when the edge has a key (`max-age=10`)',
        body: { kind: 'json', schema: 'ServedIndex' },
        headers: { etag: 'Validator of exactly these bytes (a fresh statement is other bytes)' },
      },
      '304': { description: 'Not modified (If-None-Match matched)', headers: { etag: 'Validator' } },
    },
    problems: [400, 404],
  },
  {
    method: 'get',
    path: '/v1/artifacts/{name}/{version}/manifest',
    operationId: 'getManifest',
    summary: 'The signed manifest of a version, as the maintainer signed it',
    description:
      '404 while the index does not list the version. A version the index lists whose manifest is not servable (a commit cut off mid-commit) is a 503 `manifest-being-repaired` with Retry-After, not a 404; so are its blob and chunk index. That answer also starts the repair of the version in the background (at most one per version per minute, none while a commit of it may still be alive), so a retry after the commit is 2 minutes dead is served; the retention pass repairs it too.',
    tag: 'artifacts',
    parameters: [
      nameParam,
      versionParam,
      { name: 'if-none-match', in: 'header', schema: z.string(), description: 'ETag list; 304 on a match.' },
    ],
    responses: {
      '200': {
        description: 'The signed manifest envelope',
        body: { kind: 'json', schema: 'SignedManifest' },
        headers: { etag: 'Validator of the stored envelope' },
      },
      '304': { description: 'Not modified (If-None-Match matched)' },
    },
    problems: [400, 404],
  },
  getBlob,
  headOf(getBlob),
  getChunks,
  headOf(getChunks),
  {
    method: 'post',
    path: '/v1/publish/{name}/{version}',
    operationId: 'startPublish',
    summary: 'Stage a publish with its signed manifest (the version stays invisible until its bytes land)',
    description: MAINTAINER_SIGNED,
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam],
    requestBody: { kind: 'json', schema: 'SignedManifest' },
    responses: {
      '201': {
        description: 'Staged; how to upload the bytes',
        body: { kind: 'json', schema: 'PublishStarted' },
      },
    },
    problems: [400, 401, 409, 413, 415, 422],
  },
  {
    method: 'put',
    path: '/v1/publish/{name}/{version}/blob',
    operationId: 'putBlob',
    summary: 'Upload the artifact bytes in one request; commits the version',
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam, contentLengthParam],
    requestBody: { kind: 'binary', contentType: 'application/octet-stream' },
    responses: { '201': { description: 'Published', body: { kind: 'json', schema: 'Published' } } },
    problems: [400, 401, 409, 411, 413, 415, 422],
  },
  {
    method: 'post',
    path: '/v1/publish/{name}/{version}/commit',
    operationId: 'commitStaged',
    summary:
      'Commit the staged manifest against bytes already stored for the version (a manifest re-signed after a 409 serial-overtaken)',
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam],
    responses: { '201': { description: 'Published', body: { kind: 'json', schema: 'Published' } } },
    problems: [400, 401, 409, 422],
  },
  {
    method: 'delete',
    path: '/v1/publish/{name}/{version}/attempts/{attempt}',
    operationId: 'abandonStagedPublish',
    summary:
      'Give up a staged publish attempt (the `attempt` its start answered), freeing the version at once; never touches a published version',
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam, { name: 'attempt', in: 'path', schema: Sha256Hex }],
    responses: { '204': { description: 'Given up, or nothing of the attempt was staged any more' } },
    problems: [400, 401, 409],
  },
  {
    method: 'post',
    path: '/v1/publish/{name}/{version}/uploads',
    operationId: 'createMultipartUpload',
    summary: 'Start a multipart upload of the artifact bytes',
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam],
    responses: {
      '201': { description: 'Upload created', body: { kind: 'json', schema: 'MultipartCreated' } },
    },
    problems: [400, 401, 409, 422],
  },
  {
    method: 'put',
    path: '/v1/publish/{name}/{version}/uploads/{uploadId}/parts/{part}',
    operationId: 'uploadPart',
    summary: 'Upload one part of a multipart upload',
    tag: 'publish',
    auth: 'bearer',
    parameters: [
      nameParam,
      versionParam,
      uploadIdParam,
      { name: 'part', in: 'path', schema: z.number().int().min(1).max(MAX_PARTS) },
      contentLengthParam,
    ],
    requestBody: { kind: 'binary', contentType: 'application/octet-stream' },
    responses: { '200': { description: 'Part stored', body: { kind: 'json', schema: 'UploadedPart' } } },
    problems: [400, 401, 409, 411, 413, 415],
  },
  {
    method: 'post',
    path: '/v1/publish/{name}/{version}/uploads/{uploadId}/complete',
    operationId: 'completeMultipartUpload',
    summary: 'Complete a multipart upload; verifies the bytes and commits the version',
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam, uploadIdParam],
    requestBody: { kind: 'json', schema: 'CompleteMultipart' },
    responses: { '201': { description: 'Published', body: { kind: 'json', schema: 'Published' } } },
    problems: [400, 401, 409, 413, 415, 422],
  },
  {
    method: 'delete',
    path: '/v1/publish/{name}/{version}/uploads/{uploadId}',
    operationId: 'abortMultipartUpload',
    summary: 'Abort a multipart upload and drop the staged manifest',
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam, uploadIdParam],
    responses: { '204': { description: 'Aborted' } },
    problems: [400, 401, 404, 409],
  },
  {
    method: 'put',
    path: '/v1/publish/{name}/{version}/deltas/{from}/{method}',
    operationId: 'putDelta',
    summary: 'Upload a raw delta the staged manifest lists; the edge frames it',
    tag: 'publish',
    auth: 'bearer',
    parameters: [
      nameParam,
      versionParam,
      { name: 'from', in: 'path', schema: Version },
      { name: 'method', in: 'path', schema: DeltaMethod },
      contentLengthParam,
    ],
    requestBody: { kind: 'binary', contentType: 'application/octet-stream' },
    responses: {
      '201': { description: 'Delta framed and stored', body: { kind: 'json', schema: 'DeltaUploaded' } },
    },
    problems: [400, 401, 404, 409, 411, 415, 422],
  },
  {
    method: 'put',
    path: '/v1/publish/{name}/{version}/chunks',
    operationId: 'putChunkIndex',
    summary: 'Upload the chunk index the staged manifest lists',
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam, contentLengthParam],
    requestBody: { kind: 'binary', contentType: 'application/vnd.deltaport.chunk-index' },
    responses: {
      '201': { description: 'Chunk index stored', body: { kind: 'json', schema: 'ChunkIndexUploaded' } },
    },
    problems: [400, 401, 404, 409, 411, 415, 422],
  },
  {
    method: 'put',
    path: '/v1/publish/{name}/{version}/manifest',
    operationId: 'resignManifest',
    summary:
      "Replace a published version's signed manifest with one re-signed with a new expiry (no other field may change)",
    description: MAINTAINER_SIGNED,
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam],
    requestBody: { kind: 'json', schema: 'SignedManifest' },
    responses: {
      '200': {
        description: 'Re-signed manifest in force',
        body: { kind: 'json', schema: 'ManifestResigned' },
      },
    },
    problems: [400, 401, 404, 409, 413, 415, 422],
  },
  {
    method: 'put',
    path: '/v1/publish/{name}/{version}/yank',
    operationId: 'yankVersion',
    summary:
      'Pull a published release: channel heads move to the highest version not yanked, a rollout of it is aborted, agents stop picking it; its bytes stay served. With a signed statement, devices running it move back to the version they ran before',
    description: YANK_SIGNED,
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam],
    requestBody: { kind: 'json', schema: 'YankRequest' },
    responses: {
      '200': { description: 'Yanked; the channel heads after', body: { kind: 'json', schema: 'YankResult' } },
    },
    problems: [400, 401, 404, 409, 413, 415, 422],
  },
  {
    method: 'delete',
    path: '/v1/publish/{name}/{version}/yank',
    operationId: 'restoreVersion',
    summary:
      'Restore a yanked release (channel heads recomputed); an optional signed restore makes devices ignore the older yank',
    description: YANK_SIGNED,
    tag: 'publish',
    auth: 'bearer',
    parameters: [nameParam, versionParam],
    requestBody: { kind: 'json', schema: 'RestoreRequest' },
    bodyOptional: true,
    responses: {
      '200': {
        description: 'Restored; the channel heads after',
        body: { kind: 'json', schema: 'YankResult' },
      },
    },
    problems: [400, 401, 404, 409, 413, 415, 422],
  },
  getDelta,
  headOf(getDelta),
  {
    method: 'post',
    path: '/v1/plan',
    operationId: 'planUpdate',
    summary: 'The cheapest update path (delta, chain, chunk-sync or full) for one device',
    description: 'The body may be sent with `Content-Encoding: gzip` (other encodings: 415).',
    tag: 'plan',
    requestBody: { kind: 'json', schema: 'PlanRequest' },
    responses: { '200': { description: 'The plan', body: { kind: 'json', schema: 'PlanResponse' } } },
    problems: [400, 404, 413, 415],
  },
  {
    method: 'get',
    path: '/v1/config',
    operationId: 'getRuntimeConfig',
    summary: 'The runtime config this isolate uses, its source and the last rejected document',
    description:
      '`warnings` lists values of the config in force that the edge ignores or overrides (a region map ' +
      'value that is not a region name, a zone declared twice, a bucket binding the Worker lacks, ...), ' +
      'each with its path; `deltaport config check` finds the same before a document is stored.',
    tag: 'operator',
    auth: 'bearer',
    responses: {
      '200': { description: 'Config status', body: { kind: 'json', schema: 'RuntimeConfigStatus' } },
    },
    problems: [401],
  },
  {
    method: 'post',
    path: '/v1/telemetry',
    operationId: 'postTelemetry',
    summary: "Submit a client's access batch for regional aggregation",
    description: `The body may be sent with \`Content-Encoding: gzip\`; 429 carries Retry-After. ${DEVICE_AUTH}`,
    tag: 'telemetry',
    requestBody: { kind: 'json', schema: 'TelemetryBatch' },
    responses: {
      '202': { description: 'Accepted for aggregation', body: { kind: 'json', schema: 'TelemetryReceipt' } },
    },
    problems: [400, 401, 413, 415, 429],
  },
  {
    method: 'get',
    path: '/v1/prefetch',
    operationId: 'getPrefetchQueue',
    summary: 'What this client should stage while idle',
    description: `A repeated query is answered from a short cache; new plans are rate-limited per client (\`limits.prefetchPlansPerClientPerMinute\`), 429 carries Retry-After. ${DEVICE_AUTH}`,
    tag: 'prefetch',
    parameters: [
      { name: 'client', in: 'query', schema: ClientId, required: true },
      { name: 'region', in: 'query', schema: RegionName },
      {
        name: 'installed',
        in: 'query',
        schema: z.string().max(16 * 1024),
        description: 'Comma-separated `name@version` list (at most 128).',
      },
      { name: 'channel', in: 'query', schema: ChannelName.default('stable') },
      {
        name: 'budget',
        in: 'query',
        schema: z
          .number()
          .int()
          .min(0)
          .max(64 * 1024 ** 3)
          .default(512 * 1024 ** 2),
        description: 'Bytes the client is willing to stage now.',
      },
    ],
    responses: {
      '200': {
        description:
          'The prefetch queue; with INDEX_SIGNING_KEY set, `statement` signs it for the client and region it was planned for',
        body: { kind: 'json', schema: 'ServedPrefetchQueue' },
      },
    },
    problems: [400, 401, 429],
  },
  ...rolloutRoutes(),
  ...rootRoutes(),
  ...deviceRoutes(),
  ...shardRoutes(),
  ...dashboardRoutes(),
]

/** /dashboard (workers/routes/dashboard.ts): the operator's HTML page and its login form. */
function dashboardRoutes(): RouteSpec[] {
  const html = (description: string): ResponseSpec => ({
    description,
    body: { kind: 'binary', contentType: 'text/html' },
  })
  const operator =
    'Operator auth: `Authorization: Bearer <OPERATOR_TOKEN>` or the session cookie set by POST /dashboard/login.'
  return [
    {
      method: 'get',
      path: '/dashboard',
      operationId: 'getDashboard',
      summary: 'The operator dashboard (server-rendered HTML, inline CSS and SVG, no scripts)',
      description: `${operator} Without it: the login page (401, HTML) for clients that accept text/html, else 401 problem+json.`,
      tag: 'operator',
      responses: {
        '200': html('The dashboard page'),
        '401': html('The login page (clients that accept text/html; others get a problem)'),
      },
      problems: [401, 429],
    },
    {
      method: 'get',
      path: '/dashboard/login',
      operationId: 'getDashboardLogin',
      summary: 'The login form (303 to /dashboard when already signed in)',
      tag: 'operator',
      backed: false,
      responses: { '200': html('The login form'), '303': { description: 'Already signed in' } },
    },
    {
      method: 'post',
      path: '/dashboard/login',
      operationId: 'postDashboardLogin',
      summary:
        'Sign in with the operator token (form field `token`); sets an HttpOnly SameSite=Strict cookie',
      description:
        'Same-origin form posts only (Origin checked, 403 otherwise). The token is never put in a URL.',
      tag: 'operator',
      backed: false,
      requestBody: { kind: 'binary', contentType: 'application/x-www-form-urlencoded' },
      responses: {
        '303': { description: 'Signed in; redirect to /dashboard', headers: { 'set-cookie': 'The session' } },
        '401': html('Wrong token: the login form again'),
        '429': html('Over the per-address token-attempt limit: the login form again, with Retry-After'),
      },
      problems: [403, 413, 415],
    },
    {
      method: 'post',
      path: '/dashboard/logout',
      operationId: 'postDashboardLogout',
      summary: 'Sign out (clears the session cookie)',
      tag: 'operator',
      backed: false,
      responses: { '303': { description: 'Signed out; redirect to the login form' } },
      problems: [403],
    },
  ]
}

/**
 * /v1/devices (workers/routes/devices.ts): enrollment codes and enrolled devices (operator) and device
 * enrollment (public).
 */
function deviceRoutes(): RouteSpec[] {
  const operator = 'Operator auth: `Authorization: Bearer <OPERATOR_TOKEN>`.'
  return [
    {
      method: 'post',
      path: '/v1/devices/enrollment-codes',
      operationId: 'createEnrollmentCode',
      summary: 'Create an enrollment code (answered once; the edge keeps only its SHA-256)',
      description: operator,
      tag: 'devices',
      auth: 'bearer',
      requestBody: { kind: 'json', schema: 'EnrollmentCodeRequest' },
      responses: {
        '201': {
          description: 'The code and its record',
          body: { kind: 'json', schema: 'EnrollmentCodeCreated' },
        },
      },
      problems: [400, 401, 409, 413, 415, 429],
    },
    {
      method: 'get',
      path: '/v1/devices/enrollment-codes',
      operationId: 'listEnrollmentCodes',
      summary: 'Enrollment codes with their device counts (never the codes themselves)',
      description: operator,
      tag: 'devices',
      auth: 'bearer',
      responses: {
        '200': { description: 'The codes', body: { kind: 'json', schema: 'EnrollmentCodeList' } },
      },
      problems: [401, 429],
    },
    {
      method: 'post',
      path: '/v1/devices/enrollment-codes/{id}/revoke',
      operationId: 'revokeEnrollmentCode',
      summary: 'Revoke a code and every device credential it issued',
      description: `${operator} Edges refuse its credentials within the runtime config's cacheTtlSeconds.`,
      tag: 'devices',
      auth: 'bearer',
      parameters: [{ name: 'id', in: 'path', schema: schemas.EnrollmentCodeId }],
      responses: {
        '200': { description: 'The revoked code', body: { kind: 'json', schema: 'EnrollmentCodeInfo' } },
      },
      problems: [400, 401, 404, 429],
    },
    {
      method: 'get',
      path: '/v1/devices',
      operationId: 'listDevices',
      summary: 'Enrolled devices (id, code, enrollment, last renewal, revocation), one page in id order',
      description: `${operator} Pass \`next\` as \`after\` for the following page.`,
      tag: 'devices',
      auth: 'bearer',
      parameters: [
        { name: 'code', in: 'query', schema: schemas.EnrollmentCodeId, description: 'Only this code.' },
        {
          name: 'limit',
          in: 'query',
          schema: z.number().int().min(1).max(schemas.MAX_DEVICES_PAGE).default(schemas.MAX_DEVICES_PAGE),
        },
        { name: 'after', in: 'query', schema: schemas.DeviceId, description: 'The previous page’s `next`.' },
      ],
      responses: {
        '200': { description: 'One page of devices', body: { kind: 'json', schema: 'DeviceList' } },
      },
      problems: [400, 401, 429],
    },
    {
      method: 'post',
      path: '/v1/devices/{deviceId}/revoke',
      operationId: 'revokeDevice',
      summary: 'Revoke one device: its credentials are refused and it cannot renew',
      description:
        `${operator} Edges refuse its credentials within the runtime config's cacheTtlSeconds; its code ` +
        'and other devices are unaffected. 409 when too many revoked devices still hold valid credentials ' +
        '(revoke the code instead).',
      tag: 'devices',
      auth: 'bearer',
      parameters: [{ name: 'deviceId', in: 'path', schema: schemas.DeviceId }],
      responses: {
        '200': { description: 'The revoked device', body: { kind: 'json', schema: 'DeviceInfo' } },
      },
      problems: [400, 401, 404, 409, 429],
    },
    {
      method: 'post',
      path: '/v1/devices/enroll',
      operationId: 'enrollDevice',
      summary: 'Trade an enrollment code for a device credential',
      description:
        'Public; rate-limited per client address (30 a minute, checked first) and per code (429 with ' +
        "Retry-After), and bounded by the code's maxDevices (409). " +
        'An unknown, revoked or expired code is a 403. With `credential` (the previous one, even expired) ' +
        'the same device id is renewed without using a slot; a revoked device is refused (403), not ' +
        'enrolled afresh.',
      tag: 'devices',
      requestBody: { kind: 'json', schema: 'EnrollRequest' },
      responses: {
        '201': { description: 'Enrolled', body: { kind: 'json', schema: 'DeviceEnrollment' } },
        '200': { description: 'Renewed', body: { kind: 'json', schema: 'DeviceEnrollment' } },
      },
      problems: [400, 403, 409, 413, 415, 429],
    },
  ]
}

/** /v1/rollouts (workers/routes/rollouts.ts): staged rollouts per artifact and channel. */
function rolloutRoutes(): RouteSpec[] {
  const params: ParamSpec[] = [nameParam, { name: 'channel', in: 'path', schema: ChannelName }]
  const control = (action: 'pause' | 'resume' | 'abort', summary: string): RouteSpec => ({
    method: 'post',
    path: `/v1/rollouts/{name}/{channel}/${action}`,
    operationId: `${action}Rollout`,
    summary,
    tag: 'rollouts',
    auth: 'bearer',
    parameters: params,
    description: ROLLOUT_SIGNED,
    requestBody: { kind: 'json', schema: 'RolloutControlRequest' },
    responses: {
      '200': { description: 'The rollout status', body: { kind: 'json', schema: 'RolloutStatus' } },
    },
    problems: [400, 401, 404, 409, 413, 415, 422],
  })
  return [
    {
      method: 'get',
      path: '/v1/rollouts/{name}/{channel}',
      operationId: 'checkRollout',
      summary: 'Is this client in the rollout, and which version should it run',
      tag: 'rollouts',
      parameters: [...params, { name: 'client', in: 'query', schema: ClientId, required: true }],
      responses: {
        '200': { description: 'The answer', body: { kind: 'json', schema: 'ServedRolloutCheck' } },
      },
      problems: [400, 404],
    },
    {
      method: 'post',
      path: '/v1/rollouts/{name}/{channel}/outcomes',
      operationId: 'reportRolloutOutcome',
      summary: "Report an agent's outcome (installed, failed, rolled back)",
      description: `One client counts once (its latest outcome); 429 carries Retry-After. ${DEVICE_AUTH}`,
      tag: 'rollouts',
      parameters: params,
      requestBody: { kind: 'json', schema: 'RolloutOutcome' },
      responses: { '202': { description: 'Recorded', body: { kind: 'json', schema: 'OutcomeReceipt' } } },
      problems: [400, 401, 404, 409, 413, 415, 429],
    },
    {
      method: 'post',
      path: '/v1/rollouts/{name}/{channel}/start',
      operationId: 'startRollout',
      summary: 'Schedule a staged rollout of a published version',
      description: ROLLOUT_SIGNED,
      tag: 'rollouts',
      auth: 'bearer',
      parameters: params,
      requestBody: { kind: 'json', schema: 'RolloutStartRequest' },
      responses: { '201': { description: 'Scheduled', body: { kind: 'json', schema: 'RolloutStatus' } } },
      problems: [400, 401, 404, 409, 413, 415, 422],
    },
    control('pause', 'Pause a rollout (no stage advances; admitted clients stay in)'),
    control('resume', 'Resume a paused rollout'),
    control('abort', 'Abort a rollout (nobody new is admitted)'),
    {
      method: 'get',
      path: '/v1/rollouts/{name}/{channel}/status',
      operationId: 'getRolloutStatus',
      summary: 'Stage, cohort progress, failure rate with its Wilson interval, halt reason, history',
      tag: 'rollouts',
      auth: 'bearer',
      parameters: params,
      responses: {
        '200': { description: 'The rollout status', body: { kind: 'json', schema: 'RolloutStatus' } },
      },
      problems: [400, 401, 404],
    },
  ]
}

/**
 * /v1/roots (workers/routes/roots.ts): root metadata (ADR 0035), the chain of trusted keys devices follow.
 * Reads are public; a root is stored once, after the edge checked it against the chain (publish/roots.ts).
 */
function rootRoutes(): RouteSpec[] {
  const versionParam: ParamSpec = {
    name: 'version',
    in: 'path',
    schema: z.number().int().min(1).max(schemas.MAX_ROOT_VERSION),
    description: 'Decimal, without sign or leading zeros.',
  }
  const ifNoneMatch: ParamSpec = {
    name: 'if-none-match',
    in: 'header',
    schema: z.string(),
    description: 'ETag list; 304 on a match.',
  }
  return [
    {
      method: 'get',
      path: '/v1/roots/latest',
      operationId: 'getLatestRoot',
      summary: 'The highest published root',
      description:
        'Cached for seconds only (`Cache-Control: public, max-age=5`): it moves when a root is published. ' +
        '`Content-Location` names the version. 404 (not cached) when no root is published.',
      tag: 'roots',
      parameters: [ifNoneMatch],
      responses: {
        '200': {
          description: 'The signed root, as stored',
          body: { kind: 'json', schema: 'SignedRoot' },
          headers: { etag: 'Validator of the stored root', 'content-location': '`/v1/roots/<version>`' },
        },
        '304': { description: 'Not modified (If-None-Match matched)' },
      },
      problems: [404],
    },
    {
      method: 'get',
      path: '/v1/roots/{version}',
      operationId: 'getRoot',
      summary: 'One published root, by version',
      description:
        'A published root never changes, so it is served `immutable` for a year. A version not (yet) ' +
        'published is a 404 that is never cached: devices ask for the root after theirs to learn of rotations.',
      tag: 'roots',
      parameters: [versionParam, ifNoneMatch],
      responses: {
        '200': {
          description: 'The signed root, as stored',
          body: { kind: 'json', schema: 'SignedRoot' },
          headers: { etag: 'Validator of the stored root' },
        },
        '304': { description: 'Not modified (If-None-Match matched)' },
      },
      problems: [400, 404],
    },
    {
      method: 'put',
      path: '/v1/roots/{version}',
      operationId: 'publishRoot',
      summary: 'Publish the next root of the chain (write-once)',
      description:
        'The body (at most 32 KiB; gzip or identity) must be root `version`, unexpired (422). Root 1 must carry ' +
        "its own root role's threshold of signatures; root n > 1 needs root n−1 published (409 otherwise) " +
        "and the threshold of signatures of both root n−1's root keys and its own (422 `untrusted-root` " +
        'otherwise). It is stored as canonical JSON. Publishing a stored version again answers 200 when the ' +
        'canonical bytes are the same and 409 when they differ (including root 1 once any root exists).',
      tag: 'roots',
      auth: 'bearer',
      parameters: [versionParam],
      requestBody: { kind: 'json', schema: 'SignedRoot' },
      responses: {
        '201': {
          description: 'Stored; the envelope as stored',
          body: { kind: 'json', schema: 'SignedRoot' },
          headers: { location: '`/v1/roots/<version>`' },
        },
        '200': {
          description: 'Already stored with the same canonical bytes (a retry); the envelope as stored',
          body: { kind: 'json', schema: 'SignedRoot' },
        },
      },
      problems: [400, 401, 409, 413, 415, 422],
    },
  ]
}

/** Dependency sharding across zones (workers/routes/shards.ts): the plan is public, the rest maintainer-only. */
function shardRoutes(): RouteSpec[] {
  return [
    {
      method: 'get',
      path: '/v1/shards',
      operationId: 'getShardPlan',
      summary:
        'The shard plan in force: replicas per dependency and zone, which are verified (active), hot sets',
      tag: 'shards',
      parameters: [
        {
          name: 'if-none-match',
          in: 'header',
          schema: z.string(),
          description: 'ETag list; 304 on a match.',
        },
      ],
      responses: {
        '200': {
          description: 'The current plan',
          body: { kind: 'json', schema: 'ShardPlan' },
          headers: { etag: 'Validator of the plan version' },
        },
        '304': { description: 'Not modified (If-None-Match matched)' },
      },
      problems: [404],
    },
    {
      method: 'get',
      path: '/v1/shards/metrics',
      operationId: 'getShardMetrics',
      summary: 'Per-zone hit ratio, cross-zone fetches, bytes moved, latency, forecast sMAPE, bandit state',
      tag: 'shards',
      auth: 'bearer',
      parameters: [
        {
          name: 'window',
          in: 'query',
          schema: z.number().int().min(1).max(672).default(24),
          description: 'Hours of metrics to sum.',
        },
      ],
      responses: { '200': { description: 'Metrics', body: { kind: 'json', schema: 'ShardMetrics' } } },
      problems: [400, 401],
    },
    {
      method: 'get',
      path: '/v1/shards/migrations',
      operationId: 'listShardMigrations',
      summary: 'Replica migrations (copy → verify → flip, unflip → delete), newest first',
      tag: 'shards',
      auth: 'bearer',
      parameters: [{ name: 'limit', in: 'query', schema: z.number().int().min(1).max(1000).default(200) }],
      responses: { '200': { description: 'Migrations', body: { kind: 'json', schema: 'MigrationList' } } },
      problems: [400, 401],
    },
    {
      method: 'post',
      path: '/v1/shards/replan',
      operationId: 'replanShards',
      summary: 'Run a planning cycle now (forecast, plan, migrations)',
      tag: 'shards',
      auth: 'bearer',
      responses: { '200': { description: 'Cycle result', body: { kind: 'json', schema: 'ReplanResult' } } },
      problems: [401],
    },
  ]
}
