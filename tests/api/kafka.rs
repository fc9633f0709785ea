//! Kafka clients for the tests: what the app published, and messages it
//! did not write itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// A consumed message, owned.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub key: Option<String>,
    pub payload: String,
    pub partition: i32,
    pub headers: HashMap<String, String>,
}

fn config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// Fetches metadata (of `topic`, or of the cluster).
pub(crate) async fn metadata(brokers: &str, topic: Option<&str>) -> Result<(), String> {
    let consumer: BaseConsumer = config(brokers).create().map_err(|e| e.to_string())?;
    let topic = topic.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(topic.as_deref(), Duration::from_secs(5))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Deletes `topics` where they exist, best effort: a test's leftovers.
pub(crate) async fn delete_topics(brokers: &str, topics: &[&str]) {
    let Ok(admin) = config(brokers).create::<AdminClient<DefaultClientContext>>() else {
        return;
    };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        admin.delete_topics(topics, &options),
    )
    .await;
}

/// Produces `(key, payload)` records to `topic` and waits for each.
pub(crate) async fn produce(brokers: &str, topic: &str, records: &[(String, String)]) {
    let producer: FutureProducer = config(brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("test producer");
    for (key, payload) in records {
        producer
            .send(
                FutureRecord::to(topic)
                    .key(key.as_bytes())
                    .payload(payload.as_bytes()),
                Duration::from_secs(10),
            )
            .await
            .expect("test message delivered");
    }
}

/// Reads `topic` from the beginning (a fresh consumer group) until `count`
/// messages arrived, failing after 30 s.
pub(crate) async fn consume(brokers: &str, topic: &str, count: usize) -> Vec<Record> {
    let consumer: StreamConsumer = config(brokers)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    consumer.subscribe(&[topic]).expect("subscribed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    while records.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages on {topic}", records.len()))
            .expect("consumed");
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_owned(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            partition: message.partition(),
            headers,
        });
    }
    records
}

/// Creates `topic` with `partitions` partitions (replication 1).
pub(crate) async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let admin: AdminClient<DefaultClientContext> = config(brokers).create().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .unwrap();
    for result in created {
        result.expect("the topic is created");
    }
}

/// A member of `group` that takes every partition of `topic`, then never
/// polls again: alive (its heartbeats go on) and doing nothing, as a hung
/// process. It leaves the group when dropped.
pub(crate) async fn member_that_takes_every_partition(
    brokers: &str,
    topic: &str,
    group: &str,
) -> BaseConsumer {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "30000")
        .set("max.poll.interval.ms", "300000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumer.assignment().map_or(0, |a| a.count()) == 0 {
            assert!(
                Instant::now() < deadline,
                "no partition assigned within 30 s"
            );
            let _ = consumer.poll(Duration::from_millis(100));
        }
        consumer
    })
    .await
    .unwrap()
}
