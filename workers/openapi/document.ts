import { z } from 'zod'
import { PROBLEM_CONTENT_TYPE } from '../../schemas/problem.ts'
import { type BodySpec, COMPONENT_SCHEMAS, type ParamSpec, ROUTES, type RouteSpec } from './routes.ts'

type Json = Record<string, unknown>

const TO_JSON_SCHEMA = { io: 'input', unrepresentable: 'any' } as const

const STATUS_TEXT: Record<number, string> = {
  400: 'Malformed request or invalid parameters (an upload body shorter or longer than its Content-Length: body-length-mismatch; cut off: request-body-incomplete)',
  401: 'A valid maintainer bearer token is required (the PUBLISH_TOKEN secret)',
  404: 'No such resource',
  409: 'Conflicts with the current state (e.g. no staged manifest)',
  411: 'Content-Length is required',
  412: 'A precondition (If-Match) does not hold',
  413: 'The request body is too large',
  415: "The body's media type or encoding is not accepted",
  416: 'The range cannot be served (Content-Range: bytes */size)',
  422: 'Well-formed but cannot be processed (integrity mismatch, invalid manifest)',
  429: 'Rate limited (Retry-After)',
  503: 'Being generated or repaired, or a backing service (R2, KV, a Durable Object) failed briefly; retry after Retry-After',
}

/** A standalone JSON Schema without the draft marker (OpenAPI 3.1 schemas are 2020-12 already). */
function inlineSchema(schema: z.ZodType): Json {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, TO_JSON_SCHEMA) as Json
  return rest
}

function componentSchemas(): Record<string, Json> {
  const registry = z.registry<{ id: string }>()
  for (const [id, schema] of Object.entries(COMPONENT_SCHEMAS)) registry.add(schema, { id })
  const { schemas } = z.toJSONSchema(registry, {
    ...TO_JSON_SCHEMA,
    uri: (id) => `#/components/schemas/${id}`,
  }) as { schemas: Record<string, Json> }
  return Object.fromEntries(
    Object.entries(schemas).map(([id, schema]) => {
      const { $schema: _schema, $id: _id, ...rest } = schema
      return [id, rest]
    }),
  )
}

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` })

function content(body: BodySpec): Json {
  if (body.kind === 'json') return { [body.contentType ?? 'application/json']: { schema: ref(body.schema) } }
  return { [body.contentType]: { schema: { type: 'string', contentMediaType: body.contentType } } }
}

function parameter(p: ParamSpec): Json {
  return {
    name: p.name,
    in: p.in,
    required: p.in === 'path' ? true : (p.required ?? false),
    ...(p.description ? { description: p.description } : {}),
    schema: inlineSchema(p.schema),
  }
}

const problem = (description: string): Json => ({
  description,
  content: { [PROBLEM_CONTENT_TYPE]: { schema: ref('ProblemDetails') } },
})

function operation(route: RouteSpec): Json {
  const responses: Json = {}
  for (const [status, r] of Object.entries(route.responses)) {
    responses[status] = {
      description: r.description,
      ...(r.headers
        ? {
            headers: Object.fromEntries(
              Object.entries(r.headers).map(([name, description]) => [
                name,
                { description, schema: { type: 'string' } },
              ]),
            ),
          }
        : {}),
      ...(r.body && route.method !== 'head' ? { content: content(r.body) } : {}),
    }
  }
  // Every token-checked route can refuse an address that spent its attempts (maintainer-lockout.ts).
  const problems = new Set([
    ...(route.problems ?? []),
    ...(route.auth === 'bearer' ? [401, 429] : []),
    ...(route.backed === false ? [] : [503]),
  ])
  for (const status of [...problems].sort((a, b) => a - b)) {
    const generic = problem(STATUS_TEXT[status] ?? 'Error')
    const own = responses[String(status)] as Json | undefined
    // A status the route documents a body for (GET /dashboard's HTML login page on a 401) may also be a
    // problem (the same 401 for an API client): both media types, the route's own description first.
    responses[String(status)] = own
      ? {
          ...own,
          content: { ...((own.content as Json | undefined) ?? {}), ...(generic.content as Json) },
        }
      : generic
  }
  responses.default = problem('Unexpected error')
  return {
    operationId: route.operationId,
    summary: route.summary,
    ...(route.description ? { description: route.description } : {}),
    tags: [route.tag],
    ...(route.auth === 'bearer' ? { security: [{ bearerAuth: [] }] } : {}),
    ...(route.parameters?.length ? { parameters: route.parameters.map(parameter) } : {}),
    ...(route.requestBody
      ? { requestBody: { required: !route.bodyOptional, content: content(route.requestBody) } }
      : {}),
    responses,
  }
}

/** The OpenAPI 3.1 description of the edge, from the route registry and the zod schemas. */
export function buildOpenApiDocument(routes: readonly RouteSpec[] = ROUTES): Json {
  const paths: Record<string, Json> = {}
  for (const route of routes) {
    paths[route.path] ??= {}
    const item = paths[route.path] as Json
    if (item[route.method]) throw new Error(`duplicate route ${route.method} ${route.path}`)
    item[route.method] = operation(route)
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'deltaport edge',
      version: '0.1.0',
      description:
        'Edge CDN for software updates shipped as small binary deltas. Errors are RFC 9457 problem details.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    paths,
    components: {
      schemas: componentSchemas(),
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          description: 'The maintainer/operator token (Worker secret PUBLISH_TOKEN).',
        },
      },
    },
  }
}
