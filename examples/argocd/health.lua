-- Argo CD health check for the Postern kinds (Gateway, MailDomain, RoutingPolicy, SpamPolicy):
-- in argocd-cm, as resource.customizations.health.mail.postern.dev_<Kind>.
-- Reasons that pass by themselves (pods starting, a volume being created) are Progressing,
-- never Degraded; a broken reference or an invalid config is Degraded.
local transient = { PodsNotReady = true, VolumeNotCreated = true, Pending = true, NotReported = true }
hs = { status = "Progressing", message = "waiting for the operator" }
if obj.status ~= nil and obj.status.conditions ~= nil then
  if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
    return hs
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "ConfigValid" and c.status == "False" then
      return { status = "Degraded", message = c.message }
    end
  end
  -- A store volume not bound yet (a WaitForFirstConsumer class binds it with the pod): say so.
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Durable" and c.status == "False" then
      return { status = "Progressing", message = c.reason .. ": " .. c.message }
    end
  end
  -- A listener's certificate or the DNS records need a project that is not installed.
  local missing = { CertManagerNotInstalled = true, ExternalDnsNotInstalled = true }
  for _, c in ipairs(obj.status.conditions) do
    if c.status == "False" and missing[c.reason] then
      return { status = "Degraded", message = c.reason .. ": " .. c.message }
    end
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      if c.status == "True" then return { status = "Healthy", message = c.message } end
      if c.reason == "ScaledToZero" then return { status = "Suspended", message = c.message } end
      if transient[c.reason] then return { status = "Progressing", message = c.message } end
      return { status = "Degraded", message = c.reason .. ": " .. c.message }
    end
  end
end
return hs
