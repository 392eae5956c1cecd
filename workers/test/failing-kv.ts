/**
 * A KV namespace whose reads and writes fail as KV does in an outage (the rest, e.g. list, passes to the
 * real one): for the 503s the edge answers instead of a 500 or a check let through.
 */
export function kvInOutage(kv: KVNamespace): KVNamespace {
  return new Proxy(kv, {
    get(target, property) {
      if (property === 'get' || property === 'put')
        return () => Promise.reject(new Error('KV GET failed: 503 Service Unavailable'))
      const value = Reflect.get(target, property, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}
