/**
 * The canary Deployment scripts/cluster/canary.ts applies, as an object: derived from the stable
 * Deployment in k8s/<service>.yaml — one replica, the same pod spec (TLS Secret mounts and env
 * included) but the image and, for a drill only, FAULT_* — labelled with its version and its
 * track, with a selector that never matches a stable pod.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import {
  CANARY_TRACK,
  canaryDeployment,
  canaryName,
  canarySelector,
  NAME_LABEL,
  stableDeployment,
  TRACK_LABEL,
  VERSION_LABEL,
} from "../cluster/canary.ts";
import { CANARY_FAULTS } from "../stack/control.ts";

const SERVICES = ["webapp", "rpcapp"] as const;

/** Every label of `selector` has that value in `labels` (a Deployment's matchLabels). */
function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  const entries = Object.entries(selector ?? {});
  return entries.length > 0 && entries.every(([k, v]) => labels?.[k] === v);
}

function containerOf(d: IDeployment, name: string): IContainer {
  const c = d.spec!.template.spec!.containers.find((c) => c.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

describe.each(SERVICES)("the canary Deployment of %s", (service) => {
  const stable = stableDeployment(service);
  const canary = canaryDeployment(stable, { service, tag: "v2" });

  test("is <service>-canary in the stable one's namespace, one replica, labelled with its version and track", () => {
    expect(canary.metadata?.name).toBe(canaryName(service));
    expect(canary.metadata?.name).toBe(`${service}-canary`);
    expect(canary.metadata?.namespace).toBe("portico");
    expect(canary.spec?.replicas).toBe(1);
    for (const labels of [canary.metadata?.labels, canary.spec?.template.metadata?.labels]) {
      expect(labels?.[NAME_LABEL]).toBe(service);
      expect(labels?.[VERSION_LABEL]).toBe("v2");
      expect(labels?.[TRACK_LABEL]).toBe(CANARY_TRACK);
      // The other labels are the stable pods' (part-of, component): the same dashboards and queries.
      expect(labels?.["app.kubernetes.io/part-of"]).toBe("portico");
      expect(labels?.["app.kubernetes.io/component"]).toBe(stable.metadata?.labels?.["app.kubernetes.io/component"]);
    }
    expect(containerOf(canary, service).image).toBe(`portico/${service}:v2`);
  });

  test("its selector selects its own pods and never a stable pod; the stable selector (name only) does match the canary pod", () => {
    const canaryPods = canary.spec?.template.metadata?.labels;
    const stablePods = stable.spec?.template.metadata?.labels;
    expect(canary.spec?.selector).toEqual({ matchLabels: canarySelector(service) });
    expect(canarySelector(service)).toEqual({ [NAME_LABEL]: service, [TRACK_LABEL]: "canary" });
    expect(selects(canary.spec?.selector.matchLabels, canaryPods)).toBe(true);
    expect(selects(canary.spec?.selector.matchLabels, stablePods)).toBe(false);
    // The overlap is one way and deliberate (docs/deployment.md, "Canary releases in the cluster").
    expect(stable.spec?.selector.matchLabels).toEqual({ [NAME_LABEL]: service });
    expect(selects(stable.spec?.selector.matchLabels, canaryPods)).toBe(true);
    // The stable objects never carry the track label: nothing of theirs changes.
    expect(stablePods?.[TRACK_LABEL]).toBeUndefined();
    expect(stable.metadata?.labels?.[TRACK_LABEL]).toBeUndefined();
  });

  test("runs the stable pod spec — TLS Secret mounts, env, probes, security — with only the image changed", () => {
    const expected = structuredClone(stable.spec!.template.spec!);
    for (const c of expected.containers) if (c.name === service) c.image = `portico/${service}:v2`;
    expect(canary.spec?.template.spec).toEqual(expected);
    // Spelled out: the cluster runs TLS on every hop, so the canary needs the same certificate.
    const tls = canary.spec?.template.spec?.volumes?.find((v) => v.name === "tls");
    expect(tls?.secret?.secretName).toBe(`portico-${service}-tls`);
    const container = containerOf(canary, service);
    expect(container.volumeMounts).toContainEqual({ name: "tls", mountPath: "/etc/portico-tls", readOnly: true });
    expect(container.env?.map((e) => e.name)).toEqual(
      expect.arrayContaining(["TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "SERVICE_VERSION"]),
    );
    expect(container.env?.some((e) => e.name.startsWith("FAULT_"))).toBe(false);
    // The pod template's annotations (Prometheus scraping) and the rollout settings are the stable ones'.
    expect(canary.spec?.template.metadata?.annotations).toEqual(stable.spec?.template.metadata?.annotations);
    expect(canary.spec?.strategy).toEqual(stable.spec?.strategy);
    expect(canary.spec?.minReadySeconds).toBe(stable.spec?.minReadySeconds);
  });

  test.each(Object.keys(CANARY_FAULTS) as (keyof typeof CANARY_FAULTS)[])(
    "a drill (%s) appends its FAULT_* variables to the service's container, and nothing else changes",
    (fault) => {
      const drill = canaryDeployment(stable, { service, tag: "v2-bad", fault });
      const env = containerOf(drill, service).env ?? [];
      const added = env.filter((e) => e.name.startsWith("FAULT_"));
      expect(added).toEqual(Object.entries(CANARY_FAULTS[fault]).map(([name, value]) => ({ name, value })));
      expect(added).toEqual(
        fault === "errors" ? [{ name: "FAULT_ERROR_PERCENT", value: "5" }] : [{ name: "FAULT_DELAY_MS", value: "50" }],
      );
      expect(env.slice(0, env.length - added.length)).toEqual(containerOf(stable, service).env ?? []);
      const withoutFault = structuredClone(drill);
      containerOf(withoutFault, service).env = env.filter((e) => !e.name.startsWith("FAULT_"));
      expect(withoutFault).toEqual(canaryDeployment(stable, { service, tag: "v2-bad" }));
    },
  );

  test("deriving it leaves the stable object as it was", () => {
    const before = structuredClone(stable);
    canaryDeployment(stable, { service, tag: "v3", fault: "errors" });
    expect(stable).toEqual(before);
  });
});

describe("where the stable Deployment comes from", () => {
  test("k8s/<service>.yaml's Deployment of that name, from whatever directory is given", () => {
    const dir = mkdtempSync(join(tmpdir(), "portico-canary-k8s-"));
    try {
      writeFileSync(
        join(dir, "webapp.yaml"),
        [
          "apiVersion: v1\nkind: Service\nmetadata: {name: webapp}\n---",
          "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: webapp, namespace: elsewhere, labels: {app.kubernetes.io/name: webapp}}",
          "spec:\n  selector: {matchLabels: {app.kubernetes.io/name: webapp}}",
          "  template:\n    metadata: {labels: {app.kubernetes.io/name: webapp}}",
          "    spec: {containers: [{name: webapp, image: portico/webapp:dev}, {name: sidecar, image: other:1}]}",
        ].join("\n"),
      );
      const canary = canaryDeployment(stableDeployment("webapp", dir), { service: "webapp", tag: "v9" });
      expect(canary.metadata?.namespace).toBe("elsewhere");
      expect(canary.spec?.template.spec?.containers.map((c) => c.image)).toEqual(["portico/webapp:v9", "other:1"]);
      writeFileSync(join(dir, "rpcapp.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: rpcapp}\n");
      expect(() => stableDeployment("rpcapp", dir)).toThrow("holds no Deployment named rpcapp");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
