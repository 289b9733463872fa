// The floor the gateway is measured against: the same runtime, the same upstream, and nothing
// else. No auth, no checks, no re-framing: the caller's body goes up, the upstream's answer comes
// back as a pipe. UPSTREAM_URL is the mock's full chat completions URL.
export default {
  async fetch(request, env) {
    const upstream = await fetch(env.UPSTREAM_URL, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: request.body,
    });
    return new Response(upstream.body, upstream);
  },
};
