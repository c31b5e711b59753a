# CX as Code example for the handoff service: the role and OAuth client the service uses to call
# Genesys Cloud, and the Web Services Data Action the bot flow uses to call the service.
# See README.md beside this file. The data action's contracts, request and response are read
# from ../data-action.json, so that file and this configuration cannot drift apart.

terraform {
  required_version = ">= 1.3"
  required_providers {
    genesyscloud = {
      source = "mypurecloud/genesyscloud"
      # Pin the provider version you tested with (`version = "x.y.z"`). `config_timeout_seconds`
      # on genesyscloud_integration_action needs a recent release.
    }
  }
}

# The provider authenticates with an *admin* OAuth client (client credentials) that may create
# roles, OAuth clients and integrations: set GENESYSCLOUD_OAUTHCLIENT_ID and
# GENESYSCLOUD_OAUTHCLIENT_SECRET in the environment. It is not the client created below. Its
# own roles must include the role it grants (a Genesys rule for OAuth client roles).
provider "genesyscloud" {
  aws_region = var.genesys_region
}

# ---------------------------------------------------------------------------------------------
# Variables
# ---------------------------------------------------------------------------------------------

variable "genesys_region" {
  description = "Region of the Genesys Cloud org (us-east-1, eu-west-1, ap-southeast-2, ...). Use the same value for the service's GENESYS_REGION."
  type        = string
}

variable "service_url" {
  description = "Public HTTPS base URL of the handoff service, e.g. https://handoff.example.net (no path). Genesys calls it from its cloud."
  type        = string
  validation {
    condition     = can(regex("^https://[^/]+(/.*)?$", var.service_url))
    error_message = "service_url must be an https:// URL."
  }
}

variable "webhook_secret" {
  description = "Shared secret the Data Action sends as a Bearer token; one of the service's WEBHOOK_SECRET values."
  type        = string
  sensitive   = true
  validation {
    # WEBHOOK_SECRET is a comma-separated list with blanks trimmed, so a secret can hold neither.
    condition     = can(regex("^[^,\\s]{32,}$", var.webhook_secret))
    error_message = "webhook_secret must be at least 32 characters, without commas or whitespace."
  }
}

variable "division_id" {
  description = "Division in which the role is granted to the service's OAuth client. null means the home division; \"*\" means all divisions. It must cover the divisions of the handoff queues."
  type        = string
  default     = null
}

variable "name_prefix" {
  description = "Prefix of the names of the created objects."
  type        = string
  default     = "Bot handoff"
}

data "genesyscloud_auth_division_home" "home" {}

locals {
  division_id = coalesce(var.division_id, data.genesyscloud_auth_division_home.home.id)
  action      = jsondecode(file("${path.module}/../data-action.json"))
}

# ---------------------------------------------------------------------------------------------
# The service's identity in Genesys Cloud: a role with the five permissions it needs and a
# client-credentials OAuth client holding that role.
# ---------------------------------------------------------------------------------------------

resource "genesyscloud_auth_role" "handoff_service" {
  name        = "${var.name_prefix} service"
  description = "Used by the handoff service's OAuth client: read conversations and queue observations, blind-transfer, set the external tag."

  # POST /api/v2/conversations/messages/{id}/participants/{id}/replace
  permission_policies {
    domain      = "conversation"
    entity_name = "communication"
    action_set  = ["blindTransfer"]
  }
  # GET /api/v2/routing/queues/{id} (handoff check) and the estimated wait time
  permission_policies {
    domain      = "routing"
    entity_name = "queue"
    action_set  = ["view"]
  }
  # POST /api/v2/analytics/queues/observations/query
  permission_policies {
    domain      = "analytics"
    entity_name = "queueObservation"
    action_set  = ["view"]
  }
  # GET /api/v2/routing/utilization (the message capacity; not needed with HANDOFF_MESSAGE_CAPACITY)
  permission_policies {
    domain      = "routing"
    entity_name = "utilization"
    action_set  = ["view"]
  }
  # PUT /api/v2/conversations/{id}/tags
  permission_policies {
    domain      = "conversation"
    entity_name = "externalTag"
    action_set  = ["edit"]
  }
}

resource "genesyscloud_oauth_client" "handoff_service" {
  name                          = "${var.name_prefix} service"
  description                   = "Client credentials of the handoff service (GENESYS_CLIENT_ID / GENESYS_CLIENT_SECRET)."
  authorized_grant_type         = "CLIENT-CREDENTIALS"
  access_token_validity_seconds = 86400
  state                         = "active"
  # Puts the secret into the Terraform state (marked sensitive) so it can be handed to the
  # service's secret store. Keep the state in an encrypted, access-controlled backend.
  expose_client_secret = true

  roles {
    role_id     = genesyscloud_auth_role.handoff_service.id
    division_id = local.division_id
  }
}

# ---------------------------------------------------------------------------------------------
# The Web Services Data Actions integration the bot flow calls, with the webhook secret as a
# User Defined credential field (the action sends `Authorization: Bearer ${credentials.webhookSecret}`).
# ---------------------------------------------------------------------------------------------

resource "genesyscloud_integration_credential" "webhook" {
  name                 = "${var.name_prefix} webhook secret"
  credential_type_name = "userDefined"
  fields = {
    webhookSecret = var.webhook_secret
  }
}

resource "genesyscloud_integration" "handoff" {
  integration_type = "custom-rest-actions" # "Web Services Data Actions"
  intended_state   = "ENABLED"
  config {
    name       = var.name_prefix
    notes      = "Calls POST /webhooks/bot-handoff of the handoff service."
    properties = jsonencode({})
    advanced   = jsonencode({})
    credentials = {
      # `basicAuth` is the name of this integration type's credential slot, whatever the
      # credential's type (here User Defined).
      basicAuth = genesyscloud_integration_credential.webhook.id
    }
  }
}

resource "genesyscloud_integration_action" "bot_handoff" {
  name                   = local.action.name
  category               = var.name_prefix
  integration_id         = genesyscloud_integration.handoff.id
  secure                 = local.action.secure
  config_timeout_seconds = local.action.config.timeoutSeconds

  # Changing a contract makes the provider replace the action (new id): republish the flows
  # that call it afterwards.
  contract_input  = jsonencode(local.action.contract.input.inputSchema)
  contract_output = jsonencode(local.action.contract.output.successSchema)

  config_request {
    request_url_template = "${trimsuffix(var.service_url, "/")}/webhooks/bot-handoff"
    request_type         = local.action.config.request.requestType
    headers              = local.action.config.request.headers
    # Read from JSON, so its `${...}` Velocity references are not Terraform interpolations and
    # need no `$${` escaping.
    request_template = local.action.config.request.requestTemplate
  }

  config_response {
    translation_map          = local.action.config.response.translationMap
    translation_map_defaults = local.action.config.response.translationMapDefaults
    success_template         = local.action.config.response.successTemplate
  }
}

# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------

output "genesys_client_id" {
  description = "GENESYS_CLIENT_ID for the handoff service."
  value       = genesyscloud_oauth_client.handoff_service.client_id
}

output "genesys_client_secret" {
  description = "GENESYS_CLIENT_SECRET for the handoff service (terraform output -raw genesys_client_secret)."
  value       = genesyscloud_oauth_client.handoff_service.client_secret
  sensitive   = true
}

output "data_action_id" {
  description = "Id of the data action, for Architect flows managed as code."
  value       = genesyscloud_integration_action.bot_handoff.id
}
