/**
 * Hand-written schemas for the custom resources k8s/ uses, so they are validated as strictly as
 * the built-in kinds (strict-schema.ts): no CRD is installed here to validate against, and an
 * unknown key would otherwise pass unnoticed — KEDA ignores a misspelt `minReplicaCont` and
 * scales from 0. Written from KEDA's ScaledObject specification
 * (https://keda.sh/docs/latest/reference/scaledobject-spec/) for the fields this repository may
 * use; the trigger types used here also have their metadata keys checked. cert-manager's Issuer
 * and Certificate, for the example in k8s/examples/cert-manager/, are at the end.
 */
import { type Static, type TSchema, Type as T } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import type { KubeObject, Path } from "./manifests.ts";

const strict = { additionalProperties: false } as const;
const Name = T.String({ minLength: 1, maxLength: 253 });

const HpaScalingRules = T.Object(
  {
    stabilizationWindowSeconds: T.Optional(T.Integer({ minimum: 0, maximum: 3600 })),
    selectPolicy: T.Optional(T.Union([T.Literal("Max"), T.Literal("Min"), T.Literal("Disabled")])),
    policies: T.Optional(
      T.Array(
        T.Object(
          {
            type: T.Union([T.Literal("Pods"), T.Literal("Percent")]),
            value: T.Integer({ minimum: 1 }),
            periodSeconds: T.Integer({ minimum: 1, maximum: 1800 }),
          },
          strict,
        ),
      ),
    ),
  },
  strict,
);

const MetricType = T.Union([T.Literal("AverageValue"), T.Literal("Value"), T.Literal("Utilization")]);

export const ScaledObjectSchema = T.Object(
  {
    apiVersion: T.Literal("keda.sh/v1alpha1"),
    kind: T.Literal("ScaledObject"),
    metadata: T.Object(
      {
        name: Name,
        namespace: T.Optional(Name),
        labels: T.Optional(T.Record(T.String(), T.String())),
        annotations: T.Optional(T.Record(T.String(), T.String())),
      },
      strict,
    ),
    spec: T.Object(
      {
        scaleTargetRef: T.Object(
          {
            apiVersion: T.Optional(Name),
            kind: T.Optional(Name),
            name: Name,
            envSourceContainerName: T.Optional(Name),
          },
          strict,
        ),
        pollingInterval: T.Optional(T.Integer({ minimum: 1 })),
        cooldownPeriod: T.Optional(T.Integer({ minimum: 0 })),
        initialCooldownPeriod: T.Optional(T.Integer({ minimum: 0 })),
        idleReplicaCount: T.Optional(T.Integer({ minimum: 0 })),
        minReplicaCount: T.Optional(T.Integer({ minimum: 0 })),
        maxReplicaCount: T.Optional(T.Integer({ minimum: 1 })),
        fallback: T.Optional(
          T.Object({ failureThreshold: T.Integer({ minimum: 1 }), replicas: T.Integer({ minimum: 0 }) }, strict),
        ),
        advanced: T.Optional(
          T.Object(
            {
              restoreToOriginalReplicaCount: T.Optional(T.Boolean()),
              horizontalPodAutoscalerConfig: T.Optional(
                T.Object(
                  {
                    name: T.Optional(Name),
                    behavior: T.Optional(
                      T.Object(
                        { scaleUp: T.Optional(HpaScalingRules), scaleDown: T.Optional(HpaScalingRules) },
                        strict,
                      ),
                    ),
                  },
                  strict,
                ),
              ),
              scalingModifiers: T.Optional(
                T.Object(
                  {
                    target: T.String(),
                    activationTarget: T.Optional(T.String()),
                    metricType: T.Optional(MetricType),
                    formula: T.String(),
                  },
                  strict,
                ),
              ),
            },
            strict,
          ),
        ),
        triggers: T.Array(
          T.Object(
            {
              type: Name,
              name: T.Optional(Name),
              metricType: T.Optional(MetricType),
              useCachedMetrics: T.Optional(T.Boolean()),
              // Every value is a string in KEDA's API: `threshold: 50` (a number) is rejected by the CRD.
              metadata: T.Record(T.String(), T.String()),
              authenticationRef: T.Optional(
                T.Object(
                  {
                    name: Name,
                    kind: T.Optional(
                      T.Union([T.Literal("TriggerAuthentication"), T.Literal("ClusterTriggerAuthentication")]),
                    ),
                  },
                  strict,
                ),
              ),
            },
            strict,
          ),
          { minItems: 1 },
        ),
      },
      strict,
    ),
  },
  strict,
);

export type ScaledObject = Static<typeof ScaledObjectSchema>;

/** Metadata keys of the trigger types used here: required, and the others allowed. */
const TRIGGER_METADATA: Record<string, { required: string[]; optional: string[] }> = {
  cpu: { required: ["value"], optional: ["containerName"] },
  memory: { required: ["value"], optional: ["containerName"] },
  prometheus: {
    required: ["serverAddress", "query", "threshold"],
    optional: [
      "activationThreshold",
      "namespace",
      "customHeaders",
      "ignoreNullValues",
      "queryParameters",
      "unsafeSsl",
      "timeout",
      "authModes",
    ],
  },
};

export interface SchemaProblem {
  path: Path;
  message: string;
}

function schemaProblems(schema: TSchema, object: unknown): SchemaProblem[] {
  return [...Value.Errors(schema, object)].map((e) => ({
    path: e.path
      .split("/")
      .slice(1)
      .map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, "/").replace(/~0/g, "~"))),
    message: e.message === "Unexpected property" ? "unknown field" : e.message,
  }));
}

export function validateScaledObject(object: KubeObject): SchemaProblem[] {
  const problems = schemaProblems(ScaledObjectSchema, object);
  if (problems.length > 0) return problems;
  const so = object as unknown as ScaledObject;
  so.spec.triggers.forEach((trigger, i) => {
    const keys = TRIGGER_METADATA[trigger.type];
    if (!keys) return;
    for (const key of keys.required)
      if (trigger.metadata[key] === undefined)
        problems.push({
          path: ["spec", "triggers", i, "metadata", key],
          message: `required by the ${trigger.type} trigger`,
        });
    for (const key of Object.keys(trigger.metadata)) {
      if (!keys.required.includes(key) && !keys.optional.includes(key)) {
        problems.push({
          path: ["spec", "triggers", i, "metadata", key],
          message: `unknown ${trigger.type} trigger metadata; allowed: ${[...keys.required, ...keys.optional].join(", ")}`,
        });
      }
    }
    if (
      (trigger.type === "cpu" || trigger.type === "memory") &&
      trigger.metricType !== "Utilization" &&
      trigger.metricType !== "AverageValue"
    ) {
      problems.push({
        path: ["spec", "triggers", i, "metricType"],
        message: `a ${trigger.type} trigger needs metricType Utilization or AverageValue`,
      });
    }
  });
  const { minReplicaCount = 0, maxReplicaCount = 100 } = so.spec;
  if (maxReplicaCount < minReplicaCount)
    problems.push({ path: ["spec", "maxReplicaCount"], message: `is below minReplicaCount (${minReplicaCount})` });
  return problems;
}

// ---- cert-manager (k8s/examples/cert-manager/) --------------------------------------------------
// Written from cert-manager's API reference (https://cert-manager.io/docs/reference/api-docs/) for
// the fields an Issuer or Certificate here may use: the CRDs reject an unknown field only on a
// server-side strict apply, and a misspelt `dnsName` would issue a certificate the gateway refuses.

const CertManagerMetadata = T.Object(
  {
    name: Name,
    namespace: T.Optional(Name),
    labels: T.Optional(T.Record(T.String(), T.String())),
    annotations: T.Optional(T.Record(T.String(), T.String())),
  },
  strict,
);

export const IssuerSchema = T.Object(
  {
    apiVersion: T.Literal("cert-manager.io/v1"),
    kind: T.Union([T.Literal("Issuer"), T.Literal("ClusterIssuer")]),
    metadata: CertManagerMetadata,
    spec: T.Object(
      {
        selfSigned: T.Optional(T.Object({ crlDistributionPoints: T.Optional(T.Array(T.String())) }, strict)),
        ca: T.Optional(
          T.Object(
            {
              secretName: Name,
              crlDistributionPoints: T.Optional(T.Array(T.String())),
              ocspServers: T.Optional(T.Array(T.String())),
              issuingCertificateURLs: T.Optional(T.Array(T.String())),
            },
            strict,
          ),
        ),
      },
      strict,
    ),
  },
  strict,
);

/** cert-manager's KeyUsage values (x509 key usages and extended key usages, as it spells them). */
export const CERT_MANAGER_USAGES = [
  "signing",
  "digital signature",
  "content commitment",
  "key encipherment",
  "key agreement",
  "data encipherment",
  "cert sign",
  "crl sign",
  "encipher only",
  "decipher only",
  "any",
  "server auth",
  "client auth",
  "code signing",
  "email protection",
  "s/mime",
  "ipsec end system",
  "ipsec tunnel",
  "ipsec user",
  "timestamping",
  "ocsp signing",
  "microsoft sgc",
  "netscape sgc",
] as const;

/** A Go duration as cert-manager takes it: `2160h`, `720h30m`, `90m`. */
const GoDuration = T.String({ pattern: "^(\\d+h)?(\\d+m)?(\\d+s)?$", minLength: 2 });

export const CertificateSchema = T.Object(
  {
    apiVersion: T.Literal("cert-manager.io/v1"),
    kind: T.Literal("Certificate"),
    metadata: CertManagerMetadata,
    spec: T.Object(
      {
        secretName: Name,
        secretTemplate: T.Optional(
          T.Object(
            {
              labels: T.Optional(T.Record(T.String(), T.String())),
              annotations: T.Optional(T.Record(T.String(), T.String())),
            },
            strict,
          ),
        ),
        issuerRef: T.Object(
          {
            name: Name,
            kind: T.Optional(T.Union([T.Literal("Issuer"), T.Literal("ClusterIssuer")])),
            group: T.Optional(T.Literal("cert-manager.io")),
          },
          strict,
        ),
        commonName: T.Optional(T.String({ minLength: 1, maxLength: 64 })),
        dnsNames: T.Optional(T.Array(T.String({ minLength: 1 }), { minItems: 1 })),
        ipAddresses: T.Optional(T.Array(T.String({ minLength: 1 }), { minItems: 1 })),
        uris: T.Optional(T.Array(T.String({ minLength: 1 }), { minItems: 1 })),
        emailAddresses: T.Optional(T.Array(T.String({ minLength: 1 }), { minItems: 1 })),
        subject: T.Optional(
          T.Object(
            {
              organizations: T.Optional(T.Array(T.String())),
              organizationalUnits: T.Optional(T.Array(T.String())),
              countries: T.Optional(T.Array(T.String())),
              localities: T.Optional(T.Array(T.String())),
              provinces: T.Optional(T.Array(T.String())),
            },
            strict,
          ),
        ),
        isCA: T.Optional(T.Boolean()),
        usages: T.Optional(T.Array(T.Union(CERT_MANAGER_USAGES.map((u) => T.Literal(u))), { minItems: 1 })),
        duration: T.Optional(GoDuration),
        renewBefore: T.Optional(GoDuration),
        revisionHistoryLimit: T.Optional(T.Integer({ minimum: 1 })),
        privateKey: T.Optional(
          T.Object(
            {
              algorithm: T.Optional(T.Union([T.Literal("RSA"), T.Literal("ECDSA"), T.Literal("Ed25519")])),
              size: T.Optional(T.Integer()),
              encoding: T.Optional(T.Union([T.Literal("PKCS1"), T.Literal("PKCS8")])),
              rotationPolicy: T.Optional(T.Union([T.Literal("Never"), T.Literal("Always")])),
            },
            strict,
          ),
        ),
      },
      strict,
    ),
  },
  strict,
);

export type Certificate = Static<typeof CertificateSchema>;
export type Issuer = Static<typeof IssuerSchema>;

export function validateIssuer(object: KubeObject): SchemaProblem[] {
  const problems = schemaProblems(IssuerSchema, object);
  if (problems.length > 0) return problems;
  const kinds = Object.keys((object as unknown as Issuer).spec);
  if (kinds.length !== 1)
    problems.push({ path: ["spec"], message: "names exactly one kind of issuer (selfSigned, ca, …)" });
  return problems;
}

/** Seconds in a Go duration that matched GoDuration. */
function durationSeconds(d: string): number {
  const [, h = "0", m = "0", s = "0"] = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(d) ?? [];
  return Number(h) * 3600 + Number(m) * 60 + Number(s);
}

export function validateCertificate(object: KubeObject): SchemaProblem[] {
  const problems = schemaProblems(CertificateSchema, object);
  if (problems.length > 0) return problems;
  const { spec } = object as unknown as Certificate;
  if (!spec.commonName && !spec.dnsNames && !spec.ipAddresses && !spec.uris && !spec.emailAddresses)
    problems.push({
      path: ["spec"],
      message: "needs a subject: commonName, dnsNames, ipAddresses, uris or emailAddresses",
    });
  const { algorithm = "RSA", size } = spec.privateKey ?? {};
  const sizes: Record<string, number[]> = { RSA: [2048, 3072, 4096, 8192], ECDSA: [256, 384, 521], Ed25519: [] };
  if (size !== undefined && !sizes[algorithm]!.includes(size))
    problems.push({ path: ["spec", "privateKey", "size"], message: `${size} is not a ${algorithm} key size` });
  if (algorithm !== "RSA" && spec.usages?.includes("key encipherment"))
    problems.push({ path: ["spec", "usages"], message: `an ${algorithm} key cannot do key encipherment` });
  const duration = durationSeconds(spec.duration ?? "2160h");
  if (spec.renewBefore !== undefined && durationSeconds(spec.renewBefore) >= duration)
    problems.push({ path: ["spec", "renewBefore"], message: "must be shorter than duration" });
  return problems;
}

/** apiVersion + kind → its validator; strict-schema.ts consults this before KNOWN_CUSTOM_RESOURCES. */
export const CUSTOM_RESOURCE_VALIDATORS: Readonly<Record<string, (object: KubeObject) => SchemaProblem[]>> = {
  "keda.sh/v1alpha1 ScaledObject": validateScaledObject,
  "cert-manager.io/v1 Issuer": validateIssuer,
  "cert-manager.io/v1 ClusterIssuer": validateIssuer,
  "cert-manager.io/v1 Certificate": validateCertificate,
};
