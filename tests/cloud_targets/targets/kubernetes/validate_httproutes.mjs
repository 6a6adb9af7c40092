// Validate Gateway API v1 HTTPRoutes with @kubernetes-models/gateway-api (its validators are generated
// from Gateway API's v1 types). Usage: node validate_httproutes.mjs NODE_MODULES_DIR < routes.json
// stdin: a JSON list of HTTPRoute objects. stdout: {"version": "<package version>", "errors": [[...], ...]},
// one list of messages per route (empty when valid). Unknown fields are not reported (the package allows them).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const packageDir = join(modules, "@kubernetes-models", "gateway-api");
const { version } = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8"));
const { HTTPRoute } = await import(
  pathToFileURL(join(packageDir, "gateway.networking.k8s.io", "v1", "HTTPRoute.js")).href
);

function message(err) {
  const where = err.instancePath ? err.instancePath.slice(1) : "(root)";
  const allowed = err.params && err.params.allowedValues;
  return `${where}: ${err.message}` + (allowed ? ` (${allowed.join(", ")})` : "");
}

const routes = JSON.parse(readFileSync(0, "utf8"));
const errors = routes.map((route) => {
  try {
    new HTTPRoute(route).validate(); // the schema pins apiVersion and kind too
  } catch (err) {
    if (!Array.isArray(err.errors)) throw err;
    return err.errors.map(message);
  }
  return [];
});
process.stdout.write(JSON.stringify({ version, errors }));
