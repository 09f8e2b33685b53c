//! The parsers never panic: arbitrary bytes, mutated zips, CSVs with random columns and
//! fields, and random XML give rows or an error, and rows that come back are well formed.
use super::oasis::{COL_AREA, COL_END, COL_ITEM, COL_MW, COL_START};
use super::tests::{HEADER, URL, at, error_zip, range, reply, source, zip_of};
use super::*;
use crate::time::{HOUR_US, format_gmt, from_us};
use proptest::prelude::*;
use std::io::{Read, Write};

const AREAS: [&str; 3] = [SYSTEM_AREA, "PGE-TAC", "SCE-TAC"];
const DISPOSITION: &str = "inline; filename=INVALID_REQUEST.xml.zip;";

/// `hours` hours of every area and two items, in the real column order.
fn realistic_csv(hours: i64) -> String {
    let mut csv = String::from(HEADER);
    let first = at("2023-08-13T00:00:00Z");
    for k in 0..hours {
        let start = first + k * HOUR_US;
        for area in AREAS {
            for (item, run) in [("SYS_FCST_ACT_MW", "ACTUAL"), ("SYS_FCST_DA_MW", "DAM")] {
                csv.push_str(&format!(
                    "\n{},{},0,2023-08-12,{},0,{run},{area},Load,{item},3.4,{},{run},1",
                    format_gmt(start),
                    format_gmt(start + HOUR_US),
                    k % 24 + 1,
                    20000 + k * 7
                ));
            }
        }
    }
    csv
}

/// A zip of one member stored without compression (`zip_of` deflates).
fn stored_zip(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    writer.start_file(name, options).unwrap();
    writer.write_all(bytes).unwrap();
    writer.finish().unwrap().into_inner()
}

/// A range of 0 to 96 hours around the realistic day.
fn any_range() -> impl Strategy<Value = DateRange> {
    (-48i64..48, 0i64..96).prop_map(|(from, hours)| {
        let start = from_us(at("2023-08-13T00:00:00Z") + from * HOUR_US);
        DateRange::new(start, start + TimeDelta::hours(hours)).unwrap()
    })
}

/// Read `reply` as every kind for three areas: an error, or one well-formed series per
/// area (sorted, distinct hours inside the range, a value per hour).
fn read_every_kind(reply: &Reply, range: DateRange) -> Result<(), TestCaseError> {
    let caiso = source(&AREAS, &CaisoKind::ALL);
    for kind in CaisoKind::ALL {
        if let Ok(series) = caiso.read_reply(reply, kind, range) {
            prop_assert_eq!(series.len(), AREAS.len());
            for rows in &series {
                prop_assert_eq!(rows.timestamps.len(), rows.values.len());
                prop_assert!(rows.timestamps.windows(2).all(|w| w[0] < w[1]), "{:?}", rows.timestamps);
                prop_assert!(rows.timestamps.iter().all(|t| range.holds_us(*t)));
                prop_assert!(rows.timestamps.iter().all(|t| t % HOUR_US == 0));
            }
        }
    }
    Ok(())
}

fn zip_reply(body: Vec<u8>, disposition: bool) -> Reply {
    let reply = reply(body);
    if disposition { reply.with_content_disposition(DISPOSITION) } else { reply }
}

/// A CSV field: real times and values, OASIS names, and garbage.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        (-30i64..60).prop_map(|h| format_gmt(at("2023-08-13T00:00:00Z") + h * HOUR_US)),
        (-200i64..400).prop_map(|m| format_gmt(at("2023-08-13T00:00:00Z") + m * 15 * 60 * 1_000_000)),
        prop::sample::select(vec![
            "",
            " ",
            SYSTEM_AREA,
            "PGE-TAC",
            "SYS_FCST_ACT_MW",
            "SYS_FCST_15MIN_MW",
            "NaN",
            "inf",
            "-0",
            "1e308",
            "\"quoted, with comma\"",
            "\"unterminated",
            "\"\"",
            "9999-12-31T23:59:59-00:00",
            "0000-01-01T00:00:00+23:59",
            "2023-08-13T00:00:00Z",
            "2023-08-13 00:00",
        ])
        .prop_map(str::to_string),
        any::<f64>().prop_map(|v| v.to_string()),
        "\\PC{0,12}",
    ]
}

/// A CSV column name: the ones read, other real ones, and random names.
fn column() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            COL_START,
            COL_END,
            COL_AREA,
            COL_ITEM,
            COL_MW,
            "OPR_DT",
            "OPR_HR",
            "MARKET_RUN_ID",
            "\u{feff}MW",
        ])
        .prop_map(str::to_string),
        "[A-Z_]{0,10}",
        "\\PC{0,6}",
    ]
}

/// A row for `header` that the reader takes (times, area, item and MW in their columns);
/// when `noisy`, some of its fields replaced by random ones, sometimes one field more or
/// less, and intervals that end at or before their start.
fn row(header: Vec<String>, noisy: bool) -> impl Strategy<Value = String> {
    let n = header.len();
    let minute = 60 * 1_000_000;
    let mut lengths = vec![5 * minute, 15 * minute, HOUR_US];
    if noisy {
        lengths.extend([-HOUR_US, 0]);
    }
    let (replacements, extras) = if noisy { (0..3, vec![-1i8, 0, 0, 0, 1]) } else { (0..1, vec![0i8]) };
    (
        -30i64..60,
        prop::sample::select(lengths),
        prop::sample::select(AREAS.to_vec()),
        prop::sample::select(CaisoKind::ALL.map(CaisoKind::data_item).to_vec()),
        any::<i32>(),
        prop::collection::vec((any::<prop::sample::Index>(), field()), replacements),
        prop::sample::select(extras),
    )
        .prop_map(move |(hour, length, area, item, mw, replaced, extra)| {
            let start = at("2023-08-13T00:00:00Z") + hour * HOUR_US;
            let mut fields: Vec<String> = header
                .iter()
                .map(|name| match name.as_str() {
                    COL_START => format_gmt(start),
                    COL_END => format_gmt(start + length),
                    COL_AREA => area.to_string(),
                    COL_ITEM => item.to_string(),
                    COL_MW => (f64::from(mw) / 7.0).to_string(),
                    _ => "x".to_string(),
                })
                .collect();
            for (at, value) in replaced {
                if n > 0 {
                    fields[at.index(n)] = value;
                }
            }
            match extra {
                -1 => {
                    fields.pop();
                }
                1 => fields.push("extra".into()),
                _ => {}
            }
            fields.join(",")
        })
}

/// CSV text: a header holding most of the columns read plus random ones in random order,
/// rows that are nearly right or wholly random, random line ends.
fn any_csv() -> impl Strategy<Value = String> {
    let read = vec![COL_START, COL_END, COL_AREA, COL_ITEM, COL_MW];
    let some = prop_oneof![3 => Just(read.clone()), 1 => prop::sample::subsequence(read, 3..=5)];
    (some, prop::collection::vec(column(), 0..4))
        .prop_map(|(read, extra)| {
            let mut header: Vec<String> = read.into_iter().map(str::to_string).collect();
            header.extend(extra);
            header
        })
        .prop_shuffle()
        .prop_flat_map(|header| (Just(header), any::<bool>()))
        .prop_flat_map(|(header, noisy)| {
            let random = if noisy { 1 } else { 0 };
            let line = prop_oneof![
                3 => row(header.clone(), noisy),
                random => prop::collection::vec(field(), 0..9).prop_map(|fields| fields.join(",")),
            ];
            (
                Just(header.join(",")),
                prop::collection::vec(line, 0..24),
                prop::sample::select(vec!["\n", "\r\n", "\n\n"]),
            )
        })
        .prop_map(|(header, rows, end)| {
            let mut lines = vec![header];
            lines.extend(rows);
            lines.join(end)
        })
}

/// XML-ish text built from OASIS report tags, entities and random text.
fn any_xml() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<m:OASISReport xmlns:m=\"http://www.caiso.com/soa/OASISReport_v1.xsd\">",
            "</m:OASISReport>",
            "<m:ERROR>",
            "</m:ERROR>",
            "<m:ERR_CODE>",
            "</m:ERR_CODE>",
            "<m:ERR_DESC>",
            "</m:ERR_DESC>",
            "<ERR_CODE/>",
            "<![CDATA[1000]]>",
            "<!-- comment -->",
            "<!DOCTYPE x [<!ENTITY e \"1015\">]>",
            "&e;",
            "&amp;",
            "&bogus;",
            "&#0;",
            "&#xFFFFFFFF;",
            "<a b='c' d=\"",
            "</>",
            "<",
            ">",
            "1000",
            "1015",
            "4294967296",
            "-1",
        ])
        .prop_map(str::to_string),
        "[0-9]{1,12}",
        "\\PC{0,10}",
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_bodies(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        zip_magic in any::<bool>(),
        status in prop_oneof![Just(200u16), 100u16..600],
        content_type in prop::option::of(prop::sample::select(vec!["application/x-zip-compressed", "text/html", "application/json"])),
        disposition in any::<bool>(),
        range in any_range(),
    ) {
        let mut bytes = if zip_magic { b"PK\x03\x04".to_vec() } else { Vec::new() };
        bytes.extend(body);
        let mut reply = Reply::new(status, content_type, bytes, URL);
        if disposition {
            reply = reply.with_content_disposition(DISPOSITION);
        }
        read_every_kind(&reply, range)?;
    }

    #[test]
    fn mutated_zips(
        member in prop_oneof![
            (1i64..48).prop_map(|h| ("SLD_FCST.csv".to_string(), realistic_csv(h))),
            (0u32..2000).prop_map(|code| ("INVALID_REQUEST.xml".to_string(), String::from_utf8(error_zip_xml(code)).unwrap())),
        ],
        stored in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
        inserts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in prop::option::of(any::<prop::sample::Index>()),
        disposition in any::<bool>(),
        range in any_range(),
    ) {
        let (name, text) = member;
        let mut bytes = if stored { stored_zip(&name, text.as_bytes()) } else { zip_of(&name, &text) };
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        for (at, byte) in inserts {
            let i = at.index(bytes.len() + 1);
            bytes.insert(i, byte);
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        read_every_kind(&zip_reply(bytes, disposition), range)?;
    }

    #[test]
    fn csvs_with_random_columns_and_fields(
        text in prop_oneof![3 => any_csv(), 1 => prop::collection::vec(column(), 0..8).prop_map(|c| c.join(","))],
        item in prop::sample::select(CaisoKind::ALL.map(CaisoKind::data_item).to_vec()),
        range in any_range(),
    ) {
        if let Ok(table) = parse_csv(&text)
            && let Ok(series) = table.hourly(&AREAS, item, range)
        {
            prop_assert_eq!(series.len(), AREAS.len());
        }
        read_every_kind(&zip_reply(zip_of("SLD_FCST.csv", &text), false), range)?;
        read_every_kind(&zip_reply(stored_zip("SLD_FCST.csv", text.as_bytes()), true), range)?;
    }

    #[test]
    fn random_xml(text in any_xml(), arbitrary in "\\PC{0,64}", range in any_range()) {
        for xml in [&text, &arbitrary] {
            let _ = parse_report(xml);
            read_every_kind(&zip_reply(zip_of("INVALID_REQUEST.xml", xml), false), range)?;
        }
        // a CSV member that starts like XML is read as a report
        read_every_kind(&zip_reply(zip_of("SLD_FCST.csv", &format!("<{text}")), false), range)?;
    }

    #[test]
    fn member_bytes_that_are_not_utf8(bytes in prop::collection::vec(any::<u8>(), 0..512), range in any_range()) {
        read_every_kind(&zip_reply(stored_zip("SLD_FCST.csv", &bytes), false), range)?;
        read_every_kind(&zip_reply(stored_zip("INVALID_REQUEST.xml", &bytes), true), range)?;
    }
}

/// The XML inside [`error_zip`].
fn error_zip_xml(code: u32) -> Vec<u8> {
    let zip = error_zip(code, "Processing, submit again later");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut text = Vec::new();
    archive.by_index(0).unwrap().read_to_end(&mut text).unwrap();
    text
}

/// The well-formed inputs do give rows, so the properties above see both outcomes.
#[test]
fn the_unmutated_inputs_are_read() {
    let day = day_range();
    let caiso = source(&AREAS, &CaisoKind::ALL);
    let rows = caiso.read_reply(&reply(zip_of("a.csv", &realistic_csv(24))), CaisoKind::Dam, day).unwrap();
    assert_eq!(rows.iter().map(SeriesRows::len).collect::<Vec<_>>(), [24, 24, 24]);
    let stored = caiso.read_reply(&reply(stored_zip("a.csv", realistic_csv(24).as_bytes())), CaisoKind::Actual, day);
    assert_eq!(stored.unwrap()[1].len(), 24);
    assert_eq!(parse_report(&String::from_utf8(error_zip_xml(1015)).unwrap()).unwrap().0, 1015);
}

fn day_range() -> DateRange {
    range("2023-08-13T00:00:00Z", "2023-08-14T00:00:00Z")
}
