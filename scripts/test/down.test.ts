/** scripts/down.ts against a fake kubectl (see fakes.ts). */
import { afterEach, expect, test } from "bun:test";
import { type Fakes, HAPPY, makeFakes, runScript } from "./fakes.ts";

let fakes: Fakes | undefined;
afterEach(() => fakes?.cleanup());

test("down deletes the portico namespace in the minikube context, and only that", async () => {
  fakes = makeFakes(HAPPY);
  const run = await runScript("down", fakes);
  expect(run.exitCode).toBe(0);
  expect(fakes.calls()).toEqual(["kubectl --context=minikube delete namespace portico --ignore-not-found"]);
  expect(run.stdout).toContain("$ kubectl --context=minikube delete namespace portico --ignore-not-found");
});

test("without kubectl, down exits 2 naming it", async () => {
  const { kubectl: _dropped, ...rest } = HAPPY;
  fakes = makeFakes(rest);
  const run = await runScript("down", fakes);
  expect(run.exitCode).toBe(2);
  expect(run.stderr).toContain("kubectl is not installed");
  expect(fakes.calls()).toEqual([]);
});

test("a failing delete exits non-zero with kubectl's message", async () => {
  fakes = makeFakes({ ...HAPPY, kubectl: `echo 'error: context "minikube" does not exist' >&2; exit 1` });
  const run = await runScript("down", fakes);
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain('context "minikube" does not exist');
});
