import { AdminClient } from "../../scripts/admin-client.mjs";
import { startLocalGateway } from "../../scripts/local-gateway.mjs";

export type LocalGateway = Awaited<ReturnType<typeof startLocalGateway>>;

export const ADMIN_TOKEN = "e2e-admin-token";

/**
 * The built gateway under Miniflare with one tenant made through the admin API: model `m`,
 * group `g` granting everything, org `o`, user `u`, and its key.
 */
export async function startWithTenant(
  vars: Record<string, string> = {},
): Promise<{ gateway: LocalGateway; key: string }> {
  const gateway = await startLocalGateway({ adminToken: ADMIN_TOKEN, vars });
  const admin = new AdminClient(gateway.url, ADMIN_TOKEN);
  await admin.putModel("m", {});
  await admin.putGroup("g", ["*"]);
  const { key } = await admin.createKey({ org: "o", user: "u", group: "g" });
  return { gateway, key };
}
