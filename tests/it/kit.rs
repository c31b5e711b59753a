//! The integration kit (`docs/genesys/`): the Data Action still validates as an importable Web
//! Services Data Action, defaults to advise mode, and maps every field the service answers with.

use std::collections::BTreeSet;
use std::path::PathBuf;

use genesys_sim::{ConversationKind, ConversationSpec, SimConfig};
use serde_json::Value;

use crate::helpers::{sample_payload, spawn_app_with};

fn kit_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/genesys").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn action() -> Value {
    serde_json::from_str(&kit_file("data-action.json")).expect("data-action.json is JSON")
}

/// `${name}` references of a Velocity template.
fn references(template: &str) -> BTreeSet<String> {
    template.split("${").skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned())).collect()
}

#[test]
fn the_data_action_is_an_importable_custom_action_in_advise_mode() {
    // Arrange
    let action = action();
    let request = &action["config"]["request"];
    let response = &action["config"]["response"];

    // Assert: the shape Genesys imports (name, integration type, request, response, contracts)
    for field in ["name", "category"] {
        assert!(action[field].as_str().is_some_and(|v| !v.is_empty()), "{field}");
    }
    assert_eq!(action["integrationType"], "custom-rest-actions");
    assert_eq!(action["actionType"], "custom");
    assert_eq!(request["requestType"], "POST");
    assert!(request["requestTemplate"].is_string());
    assert!(request["headers"]["Authorization"].as_str().is_some_and(|h| h.contains("${credentials.")));
    let url = request["requestUrlTemplate"].as_str().expect("url");
    assert!(url.ends_with("/webhooks/bot-handoff?mode=advise"), "the kit's main path is advise mode: {url}");
    let timeout = action["config"]["timeoutSeconds"].as_u64().expect("timeoutSeconds");
    assert!((1..=60).contains(&timeout), "Data Actions time out between 1 and 60 s");
    for schema in [&action["contract"]["input"]["inputSchema"], &action["contract"]["output"]["successSchema"]] {
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-04/schema#");
        assert_eq!(schema["type"], "object");
    }

    // Assert: the input contract covers what the request template uses and requires
    let input = &action["contract"]["input"]["inputSchema"];
    let inputs: BTreeSet<String> = input["properties"].as_object().expect("properties").keys().cloned().collect();
    for required in input["required"].as_array().expect("required") {
        assert!(inputs.contains(required.as_str().expect("name")), "{required} is required but not defined");
    }
    let used_inputs = references(request["requestTemplate"].as_str().expect("template"));
    assert!(used_inputs.contains("input.conversationId"), "{used_inputs:?}");
    for used in used_inputs.iter().filter(|u| u.starts_with("input.")) {
        let name = used.trim_start_matches("input.");
        assert!(inputs.contains(name), "the request template uses ${{{used}}}, not in the input contract");
    }

    // Assert: the output contract, the translation map, its defaults and the success template agree
    let outputs = action["contract"]["output"]["successSchema"]["properties"].as_object().expect("outputs");
    let map = response["translationMap"].as_object().expect("translationMap");
    for (name, path) in map {
        assert!(outputs.contains_key(name), "translationMap {name} is not in the output contract");
        assert!(path.as_str().is_some_and(|p| p.starts_with("$.")), "{name}: {path}");
    }
    for (name, default) in response["translationMapDefaults"].as_object().expect("defaults") {
        assert!(map.contains_key(name), "default for {name}, which is not mapped");
        serde_json::from_str::<Value>(default.as_str().expect("text")).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let template = response["successTemplate"].as_str().expect("successTemplate");
    let used = references(template);
    assert_eq!(used, map.keys().cloned().collect::<BTreeSet<_>>(), "successTemplate and translationMap differ");
    for name in ["decision", "queueId", "retryAfterSeconds", "contextWritten"] {
        assert!(outputs.contains_key(name), "advise mode's {name} is not an output");
    }
}

#[test]
fn the_terraform_defaults_to_advise_and_keeps_transfer_mode_opt_in() {
    let main = kit_file("terraform/main.tf");
    assert!(main.contains("variable \"handoff_mode\""), "no handoff_mode variable");
    assert!(main.contains("default     = \"advise\""), "advise is not the default");
    assert!(main.contains("?mode=advise"), "the request URL ignores the mode");
}

#[tokio::test]
async fn every_output_the_action_maps_is_in_the_services_advice_with_the_contracts_type() {
    // Arrange
    let action = action();
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    let ids = app.sim.sim().create_conversation(ConversationSpec::new(ConversationKind::Bot));

    // Act
    let (status, advice) =
        app.post_handoff_with_query("?mode=advise", &sample_payload(ids.conversation_id, "password_reset")).await;

    // Assert
    assert_eq!(status, 200, "{advice}");
    let outputs = &action["contract"]["output"]["successSchema"]["properties"];
    let defaults = &action["config"]["response"]["translationMapDefaults"];
    for (name, path) in action["config"]["response"]["translationMap"].as_object().expect("map") {
        let field = path.as_str().expect("path").trim_start_matches("$.");
        let value = match advice.get(field) {
            Some(v) => v.clone(),
            None => serde_json::from_str(defaults[name].as_str().unwrap_or_else(|| panic!("{name} has no default")))
                .expect("default"),
        };
        let expected = outputs[name]["type"].as_str().expect("type");
        let matches = match expected {
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "boolean" => value.is_boolean(),
            other => panic!("unexpected type {other}"),
        };
        assert!(matches, "{name}: {value} is not a {expected} ({advice})");
    }
    app.stop().await;
}
