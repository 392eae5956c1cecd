/**
 * Which methods the edge answers on a path, from the route registry (workers/openapi/routes.ts, which a
 * test holds equal to the Hono app's routes): a known path asked with another method gets 405 with an
 * `Allow` header (RFC 9110 §15.5.6) instead of a 404 that suggests the path is wrong.
 */
import { ROUTES } from '../openapi/routes.ts'

const PATTERNS = ROUTES.map((route) => ({
  method: route.method.toUpperCase(),
  pattern: new RegExp(
    `^${route.path
      .split(/\{[^}]+\}/)
      .map((literal) => literal.replace(/[.*+?^$()|[\]\\]/g, '\\$&'))
      .join('[^/]+')}$`,
  ),
}))

/** The methods routed for `path` (GET implies HEAD), sorted; empty for a path no route has. */
export function allowedMethods(path: string): string[] {
  const methods = new Set<string>()
  for (const { method, pattern } of PATTERNS) {
    if (!pattern.test(path)) continue
    methods.add(method)
    if (method === 'GET') methods.add('HEAD')
  }
  return [...methods].sort()
}
